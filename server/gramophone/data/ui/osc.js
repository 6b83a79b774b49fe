// OSC 1.0 messages to and from ArrayBuffers: what the page sends (i f s) and what the server replies.
const encoder = new TextEncoder();
const decoder = new TextDecoder();

function padded(text) {
  const bytes = encoder.encode(text);
  const out = new Uint8Array((bytes.length + 4) & ~3); // at least one NUL, then to a multiple of 4
  out.set(bytes);
  return out;
}

function number(type, value) {
  const out = new Uint8Array(4);
  const view = new DataView(out.buffer);
  if (type === "i") view.setInt32(0, value); else view.setFloat32(0, value);
  return out;
}

// message("/param/wet", "f", [0.5]) -> ArrayBuffer
export function message(address, types = "", values = []) {
  const parts = [padded(address), padded("," + types)];
  [...types].forEach((type, i) => parts.push(type === "s" ? padded(String(values[i])) : number(type, values[i])));
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) { out.set(part, at); at += part.length; }
  return out.buffer;
}

// parse(buffer) -> {address, args}; the server replies with flat messages (no bundles, no arrays)
export function parse(buffer) {
  const bytes = new Uint8Array(buffer);
  const view = new DataView(buffer);
  let at = 0;
  const string = () => {
    let end = at;
    while (end < bytes.length && bytes[end] !== 0) end++;
    const text = decoder.decode(bytes.subarray(at, end));
    at = (end + 4) & ~3;
    return text;
  };
  const address = string();
  const tags = at < bytes.length ? string().slice(1) : "";
  const args = [];
  for (const tag of tags) {
    if (tag === "i") { args.push(view.getInt32(at)); at += 4; }
    else if (tag === "f") { args.push(view.getFloat32(at)); at += 4; }
    else if (tag === "d") { args.push(view.getFloat64(at)); at += 8; }
    else if (tag === "h") { args.push(Number(view.getBigInt64(at))); at += 8; }
    else if (tag === "s") args.push(string());
    else if (tag === "b") { const n = view.getInt32(at); args.push(bytes.slice(at + 4, at + 4 + n)); at += 4 + ((n + 3) & ~3); }
    else args.push({ T: true, F: false, N: null }[tag]);
  }
  return { address, args };
}
