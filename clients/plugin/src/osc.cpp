#include "osc.hpp"

#include <cmath>
#include <cstring>

namespace gramophone::osc {

namespace {

size_t padded(size_t bytes) { return (bytes + 4) & ~size_t{3}; }  // a string with its NUL, to 4 bytes

uint32_t load_be(const char* p) {
    const auto* u = reinterpret_cast<const unsigned char*>(p);
    return (uint32_t{u[0]} << 24) | (uint32_t{u[1]} << 16) | (uint32_t{u[2]} << 8) | uint32_t{u[3]};
}

// A NUL-terminated string inside [p, end), padded to 4 bytes; nullptr when it runs over.
const char* skip_string(const char* p, const char* end) {
    const void* nul = std::memchr(p, '\0', static_cast<size_t>(end - p));
    if (nul == nullptr) return nullptr;
    const char* next = p + padded(static_cast<size_t>(static_cast<const char*>(nul) - p));
    return next <= end ? next : nullptr;
}

}  // namespace

Writer& Writer::begin(const char* address, const char* types) {
    len_ = 0;
    ok_ = true;
    put(address, std::strlen(address) + 1);
    pad();
    put(",", 1);
    put(types, std::strlen(types) + 1);
    pad();
    return *this;
}

void Writer::put(const void* data, size_t bytes) {
    if (!ok_ || len_ + bytes > cap_) {
        ok_ = false;
        return;
    }
    std::memcpy(buf_ + len_, data, bytes);
    len_ += bytes;
}

void Writer::pad() {
    static const char zeros[4] = {};
    put(zeros, (4 - len_ % 4) % 4);
}

Writer& Writer::i32(int32_t value) {
    const auto u = static_cast<uint32_t>(value);
    const char be[4] = {char(u >> 24), char(u >> 16), char(u >> 8), char(u)};
    put(be, 4);
    return *this;
}

Writer& Writer::f32(float value) {
    int32_t bits;
    std::memcpy(&bits, &value, 4);
    return i32(bits);
}

Writer& Writer::str(const char* value) {
    put(value, std::strlen(value) + 1);
    pad();
    return *this;
}

Writer& Writer::blob(const void* data, size_t bytes) {
    i32(static_cast<int32_t>(bytes));
    put(data, bytes);
    pad();
    return *this;
}

bool Reader::parse(const char* data, size_t size) {
    const char* end = data + size;
    if (size < 8 || data[0] != '/') return false;
    const char* tags = skip_string(data, end);
    if (tags == nullptr || tags >= end || *tags != ',') return false;
    const char* args = skip_string(tags, end);
    if (args == nullptr) return false;
    address_ = data;
    types_ = tags + 1;
    args_ = args;
    end_ = end;
    return true;
}

bool Reader::is(const char* address) const { return std::strcmp(address_, address) == 0; }

bool Reader::next_int(int32_t& out) {
    float real;
    if (*types_ == 'f') {
        if (!next_float(real) || real != std::floor(real)) return false;
        out = static_cast<int32_t>(real);
        return true;
    }
    if (*types_ != 'i' || end_ - args_ < 4) return false;
    out = static_cast<int32_t>(load_be(args_));
    args_ += 4;
    ++types_;
    return true;
}

bool Reader::next_float(float& out) {
    if ((*types_ != 'f' && *types_ != 'i') || end_ - args_ < 4) return false;
    const uint32_t bits = load_be(args_);
    if (*types_ == 'i') {
        out = static_cast<float>(static_cast<int32_t>(bits));
    } else {
        std::memcpy(&out, &bits, 4);
    }
    args_ += 4;
    ++types_;
    return true;
}

bool Reader::next_string(const char*& out) {
    if (*types_ != 's') return false;
    const char* next = skip_string(args_, end_);
    if (next == nullptr) return false;
    out = args_;
    args_ = next;
    ++types_;
    return true;
}

bool Reader::next_blob(const char*& data, size_t& bytes) {
    if (*types_ != 'b' || end_ - args_ < 4) return false;
    const uint32_t size = load_be(args_);
    const size_t room = static_cast<size_t>(end_ - args_) - 4;
    if (size > room) return false;
    data = args_ + 4;
    bytes = size;
    args_ += 4 + ((size + 3) & ~uint32_t{3});
    if (args_ > end_) args_ = end_;
    ++types_;
    return true;
}

}  // namespace gramophone::osc
