// The audio thread's side: it cuts the host's calls into the plugin's blocks for the network
// thread, keeps the input for the dry path, and plays each block `latency` frames later, wet
// when its answer is in its slot in time and dry (the input itself) when not, with a short
// crossfade at each switch. Offline (a bounce) it waits for the answers instead.
// It never blocks in live mode, never allocates and never locks: everything is sized in prepare().
#pragma once

#include <atomic>
#include <cstdint>
#include <vector>

#include "link.hpp"
#include "timing.hpp"

namespace gramophone {

class AudioPath {
public:
    AudioPath(Controls& controls, const Report& report) : controls_(controls), report_(report) {}

    // At activation (not real-time), after Link::activate sized `ring` and `slots` for `format`.
    void prepare(const Format& format, BlockRing& ring, SlotTable& slots, Mode mode);
    void process(const float* const* in, float* const* out, uint32_t frames, Mode mode, bool bypass);

    // Blocks that left while the session was streaming, and played dry all the same (late, lost
    // or answered dry), this session.
    uint32_t late_blocks() const { return late_.load(std::memory_order_relaxed); }

private:
    static constexpr int64_t kRenderWaitLimit = 10000000000;  // ns for one block: a dead server is found sooner

    void push_input(const float* const* in, uint32_t offset, uint32_t frames, int64_t call_ns);
    void play(float* const* out, uint32_t offset, uint32_t frames, bool bypass, int64_t call_ns);
    bool answered(int64_t block, int64_t call_ns);

    Controls& controls_;
    const Report& report_;
    Format format_;
    BlockRing* ring_ = nullptr;
    SlotTable* slots_ = nullptr;
    PaceMeter pace_;
    bool render_ = false;
    int64_t waited_ns_ = 0;
    uint32_t previous_frames_ = 0;

    std::vector<float> dry_;      // the input, interleaved, a ring of dry_frames_
    int64_t dry_frames_ = 0;
    int64_t dry_in_ = 0;          // where the next input frame goes
    std::vector<float> filling_;  // the block being filled
    uint32_t filled_ = 0;
    int64_t next_block_ = 0;      // index of the block being filled
    std::vector<int64_t> pushed_; // per slot: the block last handed to the ring
    std::vector<int> pushed_in_;  // per slot: the session it was handed to streaming, or 0

    int64_t play_ = 0;            // the input frame the next output frame plays (negative: silence before the start)
    int64_t play_block_ = 0;
    uint32_t play_phase_ = 0;
    int64_t dry_out_ = 0;         // play_ in the dry ring
    bool wet_ = false, next_wet_ = false;
    const float* wet_samples_ = nullptr;
    float gain_ = 0.0f, target_ = 0.0f, step_ = 0.0f;

    std::atomic<uint32_t> late_{0};  // written here, read by the host's parameter queries
    int session_ = 0;
};

}  // namespace gramophone
