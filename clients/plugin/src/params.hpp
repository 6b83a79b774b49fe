// The plugin's parameters: the server's own (docs/protocol.md, "Parameters"; the tests compare
// them with a running server's /params), then the plugin's settings and its outputs.
#pragma once

#include <cstdint>

namespace gramophone {

struct ServerParam {
    const char* symbol;  // the server's name: sent as /param/SYMBOL
    const char* name;
    float min, max, def;
    const char* unit;
    bool integer;
};

inline constexpr ServerParam kServerParams[] = {
    {"style_weight", "Style weight", 0.0f, 100.0f, 1.0f, "", false},
    {"content_weight", "Content weight", 0.0f, 100.0f, 0.3f, "", false},
    {"wet", "Wet", 0.0f, 1.0f, 1.0f, "", false},
    {"gain_db", "Gain", -60.0f, 24.0f, 0.0f, "dB", false},
    {"bypass", "Bypass", 0.0f, 1.0f, 0.0f, "", true},  // the host's bypass (DPF's designation)
    {"iterations", "Iterations", 0.0f, 200.0f, 8.0f, "", true},
    {"budget", "Budget", 0.05f, 0.9f, 0.4f, "", false},
    {"learning_rate", "Learning rate", 0.001f, 1.0f, 0.02f, "", false},
    {"colour", "Colour", 0.0f, 1.0f, 1.0f, "", false},
    {"pitch", "Pitch", -24.0f, 24.0f, 0.0f, "st", false},
    {"pitch_follow", "Pitch follow", 0.0f, 1.0f, 0.0f, "", false},
    {"formant", "Formant", -12.0f, 12.0f, 0.0f, "st", false},
    {"formant_follow", "Formant follow", 0.0f, 1.0f, 0.0f, "", false},
};
constexpr uint32_t kServerParamCount = sizeof(kServerParams) / sizeof(kServerParams[0]);
constexpr uint32_t kBypassParam = 4;

enum ParamIndex : uint32_t {
    kParamStyle = kServerParamCount,  // slot N: the N-th name of the server's /style/list; 0 leaves it
    kParamLatency,                    // ms, the latency reported to the host
    kParamMode,                       // Mode
    kParamAddress1,                   // the server's IPv4 address, four numbers: saved with the
    kParamAddress2,                   // project like every parameter, and shown by every host
    kParamAddress3,                   // (plugin state strings would need LV2's worker, which
    kParamAddress4,                   // lv2file lacks)
    kParamPort,
    kParamStatus,                     // outputs from here on
    kParamConnected,
    kParamServerLatency,
    kParamNeededLatency,
    kParamLateBlocks,
    kParamArrivalP99,
    kParamArrivalWorst,
    kParamCount
};

constexpr uint32_t kStyleSlots = 32;
constexpr int kDefaultAddress[4] = {127, 0, 0, 1};
constexpr int kDefaultPort = 57300;  // the server's default
// At 48 kHz this leaves the server 187 ms at host blocks of 512 and 1024 frames (its own latency
// is 185-192 ms there: it lowers its optimiser budget a little to fit when it must), 182 ms at
// 256 and 178-179 ms at 64-128: the answer window loses the crossfade, the margin and, for
// blocks under the plugin's, the re-blocking. At 44.1 kHz (server 171-178 ms) it leaves 178-181 ms.
constexpr float kDefaultLatencyMs = 195.0f;
constexpr float kMinLatencyMs = 20.0f;
constexpr float kMaxLatencyMs = 2000.0f;

enum Mode : int { kModeAuto = 0, kModeLive = 1, kModeRender = 2 };

enum Status : int {
    kStatusNoServer = 0,
    kStatusConnecting,
    kStatusLive,
    kStatusRender,
    kStatusLatencyTooSmall,
    kStatusRefused,
};

}  // namespace gramophone
