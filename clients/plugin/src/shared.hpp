// What the audio thread and the network thread share: a ring of input blocks going out, and a
// table of slots where the answers come back. Both are single-producer/single-consumer and
// allocated before the audio starts, so neither thread ever waits for, or allocates for, the other.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace gramophone {

// The audio thread takes a host call in spans of at most this many blocks: it sends a span's
// input, then plays its output. The slots are sized from it (link.cpp).
constexpr uint32_t kSpanBlocks = 32;

// One input block on its way to the server: its index since activation and when it was complete.
struct OutBlock {
    int64_t index = 0;
    int64_t ready_ns = 0;
    float* samples = nullptr;  // block × channels, interleaved
};

// Blocks from the audio thread (producer) to the network thread (consumer).
class BlockRing {
public:
    void allocate(size_t capacity, size_t samples_per_block);  // not real-time; both threads idle
    size_t capacity() const { return blocks_.size(); }

    // Producer: the next free block to fill, or nullptr when the ring is full.
    OutBlock* claim();
    void publish();
    // Consumer: the oldest published block, or nullptr.
    const OutBlock* peek();
    void pop();
    void clear();  // both threads idle

private:
    std::vector<float> storage_;
    std::vector<OutBlock> blocks_;
    std::atomic<uint64_t> head_{0};  // next to publish (producer)
    std::atomic<uint64_t> tail_{0};  // next to consume (consumer)
};

// What became of block `index`: a slot's state packs the index with one of these.
enum SlotStatus : uint64_t {
    kSlotEmpty = 0,
    kSlotSent = 1,  // on the server, answer pending
    kSlotWet = 2,   // the server's processed answer is in `samples`
    kSlotDry = 3,   // no answer will come (not sent, lost, or the server answered with the dry input)
};

constexpr uint64_t pack_slot(int64_t index, SlotStatus status) {
    return (static_cast<uint64_t>(index) << 2) | status;
}

// The answer to one block. The network thread writes `samples` and `arrived_ns`, then the state
// (release); the audio thread reads the state (acquire), then the samples. The audio thread writes
// `need_ns` then `need_index`: when it had to know, for the arrival statistics.
struct Slot {
    std::atomic<uint64_t> state{0};
    int64_t arrived_ns = 0;
    std::atomic<int64_t> need_index{-1};
    std::atomic<int64_t> need_ns{0};
    float* samples = nullptr;
};

class SlotTable {
public:
    void allocate(size_t count, size_t samples_per_block);  // not real-time; both threads idle
    size_t size() const { return count_; }
    Slot& at(int64_t index) { return slots_[static_cast<size_t>(index) % count_]; }
    void clear();  // both threads idle

private:
    std::vector<float> storage_;
    std::unique_ptr<Slot[]> slots_;  // atomics cannot live in a vector
    size_t count_ = 0;
};

}  // namespace gramophone
