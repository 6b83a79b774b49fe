// The plugin's timing arithmetic: its block for a sample rate, whether a server latency fits the
// reported one, and whether the host is calling faster than real time (a bounce).
#pragma once

#include <cstdint>
#include <ctime>

namespace gramophone {

inline int64_t now_ns() {  // CLOCK_MONOTONIC is read without a system call (vDSO)
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

// The largest power of two within 12 ms: 512 at 44.1 and 48 kHz, 1024 at 88.2 and 96 kHz. Short
// enough that a block's wait to fill adds little, long enough to keep the server's per-block work
// small; under 12 ms so that a render chunk's look-ahead always fits inside the latency (link.cpp).
uint32_t plugin_block(double sample_rate);

// The crossfade between dry and wet, in samples: a quarter block (2.7 ms at 48 kHz).
inline uint32_t crossfade_frames(uint32_t block) { return block / 4; }

// The shortest time, in samples, from a block leaving for the server to the moment the audio
// thread must know whether its answer is there, for host calls of `host_block` frames (the host's
// largest) whose first one starts with the plugin's first block. A call runs once its input is
// complete; the answer is needed by the call that plays the block's first sample, less the
// crossfade that precedes it.
int64_t answer_window(int64_t latency, uint32_t block, uint32_t host_block, uint32_t crossfade);

// The smallest latency whose answer window holds `needed` samples (server latency plus margin).
int64_t smallest_latency(int64_t needed, uint32_t block, uint32_t host_block, uint32_t crossfade);

enum class Pace { Unknown, RealTime, Offline };

// Tells a bounce from real time by the host's pace: the time between the starts of its calls,
// less any time the plugin itself spent waiting for the server. Offline: faster than twice real
// time over at least one of the host's largest blocks and 20 ms, and ahead of real time since its
// first call by half such a block or 50 ms (a real-time host that falls behind and catches up in a
// burst is never ahead). Back under 1.25 times real time is real time again. Unknown until the
// host has made enough calls to tell.
class PaceMeter {
public:
    void reset(double sample_rate, uint32_t host_block);
    // Called at the start of every host call with the frames of the previous call and the time
    // the plugin waited in it.
    Pace update(int64_t now_ns, uint32_t previous_frames, int64_t previous_wait_ns);

private:
    static constexpr int kHistory = 64;
    double sample_rate_ = 48000.0;
    int64_t window_frames_ = 0;
    int64_t first_start_ns_ = -1, last_start_ns_ = -1;
    int64_t frames_total_ = 0, waited_total_ns_ = 0;
    int64_t frames_[kHistory] = {};
    int64_t host_ns_[kHistory] = {};
    int count_ = 0;
    int next_ = 0;
    Pace pace_ = Pace::Unknown;
};

}  // namespace gramophone
