# One plugin (NAME, CHANNELS) through DPF's own Makefile; the Makefile beside it runs this twice.

FILES_DSP = \
	src/plugin.cpp \
	src/audio_path.cpp \
	src/link.cpp \
	src/osc.cpp \
	src/shared.cpp \
	src/timing.cpp

include $(DPF_PATH)/Makefile.plugins.mk

CXXFLAGS += -std=gnu++17 -DGRAMOPHONE_CHANNELS=$(CHANNELS) -Wall -Wextra
LINK_FLAGS += -pthread

TARGETS = lv2_dsp vst3 clap

all: $(TARGETS)
