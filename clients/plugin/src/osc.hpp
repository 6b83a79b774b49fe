// A small OSC 1.0 codec over caller-owned buffers. Not liblo: liblo allocates for every message it
// builds or parses, and the network thread sends hundreds of blocks a second without allocating.
#pragma once

#include <cstddef>
#include <cstdint>

namespace gramophone::osc {

// Builds one message: begin(address, types), then one call per type tag, then size().
// Any overflow makes size() 0, so a truncated packet is never sent.
class Writer {
public:
    Writer(char* buffer, size_t capacity) : buf_(buffer), cap_(capacity) {}
    Writer& begin(const char* address, const char* types);
    Writer& i32(int32_t value);
    Writer& f32(float value);
    Writer& str(const char* value);
    Writer& blob(const void* data, size_t bytes);
    size_t size() const { return ok_ ? len_ : 0; }

private:
    void put(const void* data, size_t bytes);
    void pad();
    char* buf_;
    size_t cap_;
    size_t len_ = 0;
    bool ok_ = true;
};

// One received message, read in place; next_*() take the arguments in order and return false
// when the next argument is missing or of another type.
class Reader {
public:
    bool parse(const char* data, size_t size);
    const char* address() const { return address_; }
    bool is(const char* address) const;
    bool next_int(int32_t& out);  // 'i', or a whole 'f'
    bool next_float(float& out);  // 'f' or 'i'
    bool next_string(const char*& out);
    bool next_blob(const char*& data, size_t& bytes);
    bool done() const { return *types_ == '\0'; }

private:
    const char* address_ = "";
    const char* types_ = "";
    const char* args_ = nullptr;
    const char* end_ = nullptr;
};

}  // namespace gramophone::osc
