#include "timing.hpp"

#include <algorithm>
#include <numeric>

namespace gramophone {

uint32_t plugin_block(double sample_rate) {
    uint32_t block = 32;
    while (2.0 * block <= 0.012 * sample_rate) block *= 2;
    return block;
}

int64_t answer_window(int64_t latency, uint32_t block, uint32_t host_block, uint32_t crossfade) {
    const int64_t b = block, h = std::max<uint32_t>(host_block, 1);
    const int64_t period = std::lcm(b, h) / b;  // the phases between the two grids repeat
    int64_t window = INT64_MAX;
    for (int64_t k = 0; k < std::min<int64_t>(period, 4096) + 1; ++k) {
        const int64_t sent = ((k + 1) * b - 1) / h;          // the call that completes block k
        const int64_t need = k * b + latency - crossfade;   // where its crossfade would begin
        const int64_t needed = need < 0 ? -1 : need / h;    // the call that plays that sample
        window = std::min(window, (needed - sent) * h);
    }
    return window;
}

int64_t smallest_latency(int64_t needed, uint32_t block, uint32_t host_block, uint32_t crossfade) {
    int64_t low = 0, high = needed + 2 * (int64_t{block} + host_block + crossfade);
    while (low < high) {  // the window never shrinks as the latency grows
        const int64_t mid = (low + high) / 2;
        if (answer_window(mid, block, host_block, crossfade) >= needed) {
            high = mid;
        } else {
            low = mid + 1;
        }
    }
    return low;
}

void PaceMeter::reset(double sample_rate, uint32_t host_block) {
    sample_rate_ = sample_rate;
    window_frames_ = std::max<int64_t>(host_block, static_cast<int64_t>(0.02 * sample_rate));
    first_start_ns_ = last_start_ns_ = -1;
    frames_total_ = waited_total_ns_ = 0;
    count_ = next_ = 0;
    pace_ = Pace::Unknown;
}

Pace PaceMeter::update(int64_t now_ns, uint32_t previous_frames, int64_t previous_wait_ns) {
    if (first_start_ns_ < 0) first_start_ns_ = now_ns;
    if (last_start_ns_ >= 0) {
        frames_total_ += previous_frames;
        waited_total_ns_ += previous_wait_ns;
        frames_[next_] = previous_frames;
        host_ns_[next_] = std::max<int64_t>(now_ns - last_start_ns_ - previous_wait_ns, 0);
        next_ = (next_ + 1) % kHistory;
        count_ = std::min(count_ + 1, kHistory);
    }
    last_start_ns_ = now_ns;
    int64_t frames = 0, ns = 0;
    for (int i = 1; i <= count_ && frames < window_frames_; ++i) {  // newest first
        const int at = (next_ - i + kHistory) % kHistory;
        frames += frames_[at];
        ns += host_ns_[at];
    }
    if (frames < window_frames_) return pace_;
    const double speed = frames / sample_rate_ / std::max(ns * 1e-9, 1e-9);
    if (pace_ == Pace::Offline) {
        if (speed > 1.25) return pace_;
        first_start_ns_ = now_ns;  // real time again: "ahead" counts from here
        frames_total_ = waited_total_ns_ = 0;
        pace_ = Pace::RealTime;
    } else {
        const double ahead = frames_total_ / sample_rate_ - (now_ns - first_start_ns_ - waited_total_ns_) * 1e-9;
        const bool fast = speed > 2.0 && ahead >= std::max(0.5 * window_frames_ / sample_rate_, 0.05);
        pace_ = fast ? Pace::Offline : Pace::RealTime;
    }
    return pace_;
}

}  // namespace gramophone
