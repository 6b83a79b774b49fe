#include "shared.hpp"

namespace gramophone {

void BlockRing::allocate(size_t capacity, size_t samples_per_block) {
    storage_.assign(capacity * samples_per_block, 0.0f);
    blocks_.assign(capacity, OutBlock{});
    for (size_t i = 0; i < capacity; ++i) blocks_[i].samples = storage_.data() + i * samples_per_block;
    clear();
}

OutBlock* BlockRing::claim() {
    const uint64_t head = head_.load(std::memory_order_relaxed);
    if (head - tail_.load(std::memory_order_acquire) >= blocks_.size()) return nullptr;
    return &blocks_[head % blocks_.size()];
}

void BlockRing::publish() { head_.store(head_.load(std::memory_order_relaxed) + 1, std::memory_order_release); }

const OutBlock* BlockRing::peek() {
    const uint64_t tail = tail_.load(std::memory_order_relaxed);
    if (tail == head_.load(std::memory_order_acquire)) return nullptr;
    return &blocks_[tail % blocks_.size()];
}

void BlockRing::pop() { tail_.store(tail_.load(std::memory_order_relaxed) + 1, std::memory_order_release); }

void BlockRing::clear() {
    head_.store(0);
    tail_.store(0);
}

void SlotTable::allocate(size_t count, size_t samples_per_block) {
    storage_.assign(count * samples_per_block, 0.0f);
    slots_ = std::make_unique<Slot[]>(count);
    count_ = count;
    for (size_t i = 0; i < count; ++i) slots_[i].samples = storage_.data() + i * samples_per_block;
    clear();
}

void SlotTable::clear() {
    for (size_t i = 0; i < count_; ++i) {
        // No index is negative, so no block reads as answered until the network thread says so.
        slots_[i].state.store(pack_slot(-1, kSlotEmpty));
        slots_[i].need_index.store(-1);
        slots_[i].need_ns.store(0);
        slots_[i].arrived_ns = 0;
    }
}

}  // namespace gramophone
