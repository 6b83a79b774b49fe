# One plugin (NAME, CHANNELS) through DPF's own Makefile; the Makefile beside it runs this twice.

FILES_DSP = \
	src/plugin.cpp \
	src/audio_path.cpp \
	src/link.cpp \
	src/osc.cpp \
	src/shared.cpp \
	src/timing.cpp

include $(DPF_PATH)/Makefile.plugins.mk

# DPF optimises with -ffast-math, and linking a shared object with it adds crtfastmath.o, which
# turns on flush-to-zero for the whole host process when the plugin loads: the host's own
# arithmetic then loses subnormal numbers (Python's hypothesis refused to run inside pedalboard).
BASE_OPTS := $(filter-out -ffast-math,$(BASE_OPTS))

CXXFLAGS += -std=gnu++17 -DGRAMOPHONE_CHANNELS=$(CHANNELS) -Wall -Wextra
LINK_FLAGS += -pthread

TARGETS = lv2_dsp vst3 clap

all: $(TARGETS)
