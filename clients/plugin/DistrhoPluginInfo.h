// What DPF needs to know at compile time. One source builds two plugins: GRAMOPHONE_CHANNELS=2
// (Gramophone, stereo) and 1 (Gramophone Mono), since DPF 1.6 fixes the port count per binary.
#pragma once

#if GRAMOPHONE_CHANNELS == 1
#define DISTRHO_PLUGIN_NAME "Gramophone Mono"
#define DISTRHO_PLUGIN_URI "urn:gramophone:plugin:mono"
#define DISTRHO_PLUGIN_CLAP_ID "org.gramophone.plugin.mono"
#define DISTRHO_PLUGIN_CLAP_FEATURES "audio-effect", "mono"
#else
#define DISTRHO_PLUGIN_NAME "Gramophone"
#define DISTRHO_PLUGIN_URI "urn:gramophone:plugin:stereo"
#define DISTRHO_PLUGIN_CLAP_ID "org.gramophone.plugin.stereo"
#define DISTRHO_PLUGIN_CLAP_FEATURES "audio-effect", "stereo"
#endif

#define DISTRHO_PLUGIN_NUM_INPUTS GRAMOPHONE_CHANNELS
#define DISTRHO_PLUGIN_NUM_OUTPUTS GRAMOPHONE_CHANNELS
#define DISTRHO_PLUGIN_HAS_UI 0            // hosts show their generic controls
#define DISTRHO_PLUGIN_IS_RT_SAFE 1        // live, run() never waits; only a bounce waits for the server
#define DISTRHO_PLUGIN_WANT_LATENCY 1
#define DISTRHO_PLUGIN_LV2_CATEGORY "lv2:SpectralPlugin"
#define DISTRHO_PLUGIN_VST3_CATEGORIES "Fx|Network"
