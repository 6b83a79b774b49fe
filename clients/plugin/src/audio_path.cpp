#include "audio_path.hpp"

#include <algorithm>
#include <cstring>

#include <time.h>

namespace gramophone {

namespace {

int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

}  // namespace

void AudioPath::prepare(const Format& format, BlockRing& ring, SlotTable& slots, Mode mode) {
    format_ = format;
    ring_ = &ring;
    slots_ = &slots;
    const uint32_t channels = format.channels;
    dry_frames_ = format.latency + int64_t{kSpanBlocks + 1} * format.block;
    dry_.assign(static_cast<size_t>(dry_frames_) * channels, 0.0f);
    dry_in_ = 0;
    filling_.assign(size_t{format.block} * channels, 0.0f);
    filled_ = 0;
    next_block_ = 0;
    pushed_.assign(slots.size(), -1);
    pushed_in_.assign(slots.size(), 0);
    play_ = -format.latency;
    play_block_ = floor_div(play_, format.block);
    play_phase_ = static_cast<uint32_t>(play_ - play_block_ * format.block);
    dry_out_ = ((play_ % dry_frames_) + dry_frames_) % dry_frames_;
    wet_ = next_wet_ = false;
    wet_samples_ = nullptr;
    gain_ = target_ = 0.0f;
    step_ = 1.0f / static_cast<float>(format.crossfade);
    pace_.reset(format.sample_rate, format.host_block);
    render_ = mode == kModeRender;
    waited_ns_ = 0;
    previous_frames_ = 0;
    controls_.wanted = mode == kModeAuto ? kWantUnknown : render_ ? kWantRender : kWantLive;
}

void AudioPath::process(const float* const* in, float* const* out, uint32_t frames, Mode mode, bool bypass) {
    const int64_t call_ns = now_ns();
    controls_.running.store(true, std::memory_order_relaxed);
    const Pace pace = pace_.update(call_ns, previous_frames_, waited_ns_);
    render_ = mode == kModeRender || (mode == kModeAuto && pace == Pace::Offline);
    const bool known = mode != kModeAuto || pace != Pace::Unknown;
    controls_.wanted.store(known ? (render_ ? kWantRender : kWantLive) : kWantUnknown, std::memory_order_relaxed);
    if (const int session = report_.session.load(std::memory_order_relaxed); session != session_) {
        session_ = session;
        late_.store(0, std::memory_order_relaxed);
    }
    waited_ns_ = 0;
    // A span's input goes out before its output is played, so a render has all of it on the server.
    const uint32_t span = kSpanBlocks * format_.block;
    for (uint32_t done = 0; done < frames;) {
        const uint32_t n = std::min(span, frames - done);
        push_input(in, done, n, call_ns);
        play(out, done, n, bypass, call_ns);
        done += n;
    }
    previous_frames_ = frames;
}

void AudioPath::push_input(const float* const* in, uint32_t offset, uint32_t frames, int64_t call_ns) {
    const uint32_t channels = format_.channels, block = format_.block;
    for (uint32_t i = offset; i < offset + frames; ++i) {
        float* dry = &dry_[static_cast<size_t>(dry_in_) * channels];
        float* fill = &filling_[size_t{filled_} * channels];
        for (uint32_t c = 0; c < channels; ++c) dry[c] = fill[c] = in[c][i];
        if (++dry_in_ == dry_frames_) dry_in_ = 0;
        if (++filled_ < block) continue;
        filled_ = 0;
        const size_t slot = static_cast<size_t>(next_block_) % pushed_.size();
        int64_t& pushed = pushed_[slot];
        pushed = -1;  // a full ring (the network thread stalled): this block plays dry
        pushed_in_[slot] = report_.streaming.load(std::memory_order_relaxed) ? session_ : 0;
        if (OutBlock* out = ring_->claim()) {
            out->index = next_block_;
            out->ready_ns = call_ns;
            std::memcpy(out->samples, filling_.data(), filling_.size() * sizeof(float));
            ring_->publish();
            pushed = next_block_;
        }
        ++next_block_;
    }
}

// Is block `block`'s answer in, wet? Asked a crossfade before the block starts playing. Live, the
// answer is there or it is not; offline the audio thread waits for it while a session is (or is
// about to be) up, within a bound.
bool AudioPath::answered(int64_t block, int64_t call_ns) {
    if (block < 0) return false;
    const size_t at = static_cast<size_t>(block) % pushed_.size();
    if (pushed_[at] != block) return false;
    Slot& slot = slots_->at(block);
    const uint64_t wet = pack_slot(block, kSlotWet), dry = pack_slot(block, kSlotDry);
    uint64_t state;
    if (render_) {
        const int64_t began = now_ns();
        const timespec pause{0, 100000};
        while ((state = slot.state.load(std::memory_order_acquire)) != wet && state != dry &&
               report_.waiting.load(std::memory_order_relaxed) && now_ns() - began < kRenderWaitLimit) {
            nanosleep(&pause, nullptr);
        }
        waited_ns_ += now_ns() - began;
    } else {
        slot.need_ns.store(call_ns, std::memory_order_relaxed);
        slot.need_index.store(block, std::memory_order_release);
        state = slot.state.load(std::memory_order_acquire);
    }
    if (state == wet) return true;
    if (pushed_in_[at] == session_ && session_ != 0) late_.fetch_add(1, std::memory_order_relaxed);
    return false;
}

void AudioPath::play(float* const* out, uint32_t offset, uint32_t frames, bool bypass, int64_t call_ns) {
    const uint32_t channels = format_.channels, block = format_.block;
    const uint32_t decide_at = block - format_.crossfade;
    for (uint32_t i = offset; i < offset + frames; ++i) {
        if (play_phase_ == decide_at) {  // the next block: fade out now if it will be dry
            next_wet_ = !bypass && answered(play_block_ + 1, call_ns);
            if (!next_wet_) target_ = 0.0f;
        }
        if (play_phase_ == 0) {  // a wet block fades in over its first frames
            wet_ = next_wet_;
            wet_samples_ = wet_ ? slots_->at(play_block_).samples : nullptr;
            target_ = wet_ ? 1.0f : 0.0f;
        }
        gain_ = gain_ < target_ ? std::min(target_, gain_ + step_) : std::max(target_, gain_ - step_);
        const float* dry = &dry_[static_cast<size_t>(dry_out_) * channels];
        const float* wet = wet_ ? wet_samples_ + size_t{play_phase_} * channels : dry;
        for (uint32_t c = 0; c < channels; ++c) {
            out[c][i] = play_ < 0 ? 0.0f : dry[c] + gain_ * (wet[c] - dry[c]);
        }
        ++play_;
        if (++dry_out_ == dry_frames_) dry_out_ = 0;
        if (++play_phase_ == block) {
            play_phase_ = 0;
            ++play_block_;
        }
    }
}

}  // namespace gramophone
