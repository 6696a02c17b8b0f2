#include <algorithm>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "rtnq/error.hpp"
#include "rtnq/json_text.hpp"
#include "rtnq/safetensors.hpp"

namespace rtnq {
namespace {

using json = nlohmann::ordered_json;

// The deepest valid header is root object -> tensor object -> shape array.
constexpr int kMaxJsonDepth = 3;

// Quotes a tensor or key name for a message, escaping control characters.
std::string quote_name(std::string_view name) {
  std::string text = "'";
  for (char c : name) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      char escaped[8];
      std::snprintf(escaped, sizeof escaped, "\\x%02x", static_cast<unsigned char>(c));
      text += escaped;
    } else {
      text += c;
    }
  }
  return text + "'";
}

// Returns the byte offset of the first invalid UTF-8 sequence, or npos.
size_t find_invalid_utf8(std::string_view text) {
  size_t i = 0;
  while (i < text.size()) {
    const auto byte = static_cast<unsigned char>(text[i]);
    size_t length;
    uint32_t code_point;
    if (byte < 0x80) {
      i += 1;
      continue;
    } else if ((byte & 0xe0) == 0xc0) {
      length = 2;
      code_point = byte & 0x1f;
    } else if ((byte & 0xf0) == 0xe0) {
      length = 3;
      code_point = byte & 0x0f;
    } else if ((byte & 0xf8) == 0xf0) {
      length = 4;
      code_point = byte & 0x07;
    } else {
      return i;
    }
    if (i + length > text.size()) return i;
    for (size_t k = 1; k < length; ++k) {
      const auto next = static_cast<unsigned char>(text[i + k]);
      if ((next & 0xc0) != 0x80) return i;
      code_point = (code_point << 6) | (next & 0x3f);
    }
    const bool overlong = (length == 2 && code_point < 0x80) || (length == 3 && code_point < 0x800) ||
                          (length == 4 && code_point < 0x10000);
    const bool surrogate = code_point >= 0xd800 && code_point <= 0xdfff;
    if (overlong || surrogate || code_point > 0x10ffff) return i;
    i += length;
  }
  return std::string_view::npos;
}

// Parses JSON, rejecting repeated keys in one object (nlohmann::json would
// keep one silently) and nesting deeper than any valid header needs.
json parse_strict_json(std::string_view text) {
  std::vector<std::set<std::string>> keys_per_object;
  auto callback = [&](int depth, json::parse_event_t event, json& parsed) -> bool {
    if (depth > kMaxJsonDepth) {
      throw Error("header JSON is nested more than " + std::to_string(kMaxJsonDepth) +
                  " levels deep, which no safetensors header needs");
    }
    switch (event) {
      case json::parse_event_t::object_start:
        keys_per_object.emplace_back();
        break;
      case json::parse_event_t::object_end:
        keys_per_object.pop_back();
        break;
      case json::parse_event_t::key: {
        const std::string& key = parsed.get_ref<const std::string&>();
        if (!keys_per_object.back().insert(key).second) {
          throw Error("header has the key " + quote_name(key) + " twice");
        }
        break;
      }
      default:
        break;
    }
    return true;
  };
  try {
    return json::parse(text.begin(), text.end(), callback);
  } catch (const json::parse_error& error) {
    throw Error("header is not valid JSON: " + json_error_text(error));
  } catch (const json::out_of_range& error) {
    // A number such as 1e400 is valid JSON but overflows a double.
    throw Error("header has a number outside the range of a double: " + json_error_text(error));
  }
}

uint64_t checked_multiply(uint64_t a, uint64_t b, const std::string& what) {
  uint64_t product;
  if (__builtin_mul_overflow(a, b, &product)) throw Error(what);
  return product;
}

// Reads a non-negative integer that fits in int64; what names it for errors.
uint64_t read_count(const json& value, const std::string& what) {
  if (!value.is_number_integer()) {
    throw Error(what + " must be a non-negative integer, found " + value.dump());
  }
  if (value.is_number_unsigned()) {
    const uint64_t count = value.get<uint64_t>();
    if (count > uint64_t(INT64_MAX)) throw Error(what + " " + value.dump() + " is too large");
    return count;
  }
  const int64_t count = value.get<int64_t>();
  if (count < 0) throw Error(what + " must be a non-negative integer, found " + value.dump());
  return static_cast<uint64_t>(count);
}

TensorInfo parse_tensor_entry(const std::string& name, const json& entry) {
  const std::string label = "tensor " + quote_name(name);
  if (name.empty()) throw Error("a tensor has an empty name");
  for (char c : name) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      throw Error(label + " has a control character in its name");
    }
  }
  if (!entry.is_object()) throw Error(label + " must be a JSON object, found " + std::string(entry.type_name()));
  for (const auto& field : entry.items()) {
    if (field.key() != "dtype" && field.key() != "shape" && field.key() != "data_offsets") {
      throw Error(label + " has the unknown field " + quote_name(field.key()));
    }
  }
  for (const char* field : {"dtype", "shape", "data_offsets"}) {
    if (!entry.contains(field)) throw Error(label + " has no \"" + field + "\" field");
  }

  TensorInfo tensor;
  tensor.name = name;
  const json& dtype = entry["dtype"];
  if (!dtype.is_string()) throw Error(label + ": dtype must be a string, found " + dtype.dump());
  const auto parsed_dtype = parse_dtype(dtype.get_ref<const std::string&>());
  if (!parsed_dtype) throw Error(label + " has the unknown dtype " + dtype.dump());
  tensor.dtype = *parsed_dtype;

  const json& shape = entry["shape"];
  if (!shape.is_array()) throw Error(label + ": shape must be an array, found " + shape.dump());
  uint64_t elements = 1;
  for (const json& dimension : shape) {
    const uint64_t size = read_count(dimension, label + ": shape dimension");
    elements = checked_multiply(elements, size, label + ": shape " + shape.dump() + " has more than 2^64 elements");
    tensor.shape.push_back(static_cast<int64_t>(size));
  }
  const uint64_t bits = checked_multiply(elements, uint64_t(dtype_bits(tensor.dtype)),
                                         label + ": shape " + shape.dump() + " of " + std::string(dtype_name(tensor.dtype)) +
                                             " has a size in bits that overflows 64 bits");
  if (bits % 8 != 0) {
    throw Error(label + ": " + std::to_string(elements) + " elements of " + std::string(dtype_name(tensor.dtype)) +
                " do not fill whole bytes");
  }

  const json& offsets = entry["data_offsets"];
  if (!offsets.is_array() || offsets.size() != 2) {
    throw Error(label + ": data_offsets must be an array of two integers, found " + offsets.dump());
  }
  tensor.begin = read_count(offsets[0], label + ": data_offsets begin");
  tensor.end = read_count(offsets[1], label + ": data_offsets end");
  if (tensor.end < tensor.begin) {
    throw Error(label + ": data_offsets " + offsets.dump() + " end before they begin");
  }
  if (tensor.byte_size() != bits / 8) {
    throw Error(label + ": data_offsets " + offsets.dump() + " span " + std::to_string(tensor.byte_size()) +
                " bytes, but shape " + format_shape(tensor.shape) + " of " + std::string(dtype_name(tensor.dtype)) +
                " needs " + std::to_string(bits / 8));
  }
  return tensor;
}

Metadata parse_metadata(const json& value) {
  if (!value.is_object()) {
    throw Error("__metadata__ must be a JSON object of strings, found " + std::string(value.type_name()));
  }
  if (value.contains("data_offsets")) {
    throw Error("__metadata__ is described like a tensor, but the name is reserved for the metadata string map");
  }
  Metadata metadata;
  for (const auto& item : value.items()) {
    if (!item.value().is_string()) {
      throw Error("__metadata__ value of " + quote_name(item.key()) + " must be a string, found " + item.value().dump());
    }
    metadata.emplace_back(item.key(), item.value().get<std::string>());
  }
  return metadata;
}

// The data section must be exactly the tensors laid end to end.
void check_coverage(std::vector<TensorInfo>& tensors, uint64_t data_bytes) {
  std::stable_sort(tensors.begin(), tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t expected = 0;
  const TensorInfo* previous = nullptr;
  for (const TensorInfo& tensor : tensors) {
    if (tensor.begin < expected) {
      throw Error("tensor " + quote_name(tensor.name) + " at bytes [" + std::to_string(tensor.begin) + ", " +
                  std::to_string(tensor.end) + ") overlaps tensor " + quote_name(previous->name) + " which ends at " +
                  std::to_string(expected));
    }
    if (tensor.end > data_bytes) {
      throw Error("tensor " + quote_name(tensor.name) + " ends past the end of the file: tensors need " +
                  std::to_string(tensor.end) + " bytes of data but the data section has " +
                  std::to_string(data_bytes) + " (truncated file?)");
    }
    if (tensor.begin > expected) {
      throw Error("data section has a gap of " + std::to_string(tensor.begin - expected) + " bytes at offset " +
                  std::to_string(expected) + ", before tensor " + quote_name(tensor.name));
    }
    expected = tensor.end;
    previous = &tensor;
  }
  if (expected < data_bytes) {
    throw Error("data section has " + std::to_string(data_bytes - expected) +
                " bytes after the last tensor that no tensor covers");
  }
}

}  // namespace

uint64_t TensorInfo::element_count() const {
  uint64_t count = 1;
  for (int64_t dimension : shape) count *= static_cast<uint64_t>(dimension);
  return count;
}

std::string format_shape(const std::vector<int64_t>& shape) {
  std::string text = "[";
  for (size_t i = 0; i < shape.size(); ++i) text += (i ? ", " : "") + std::to_string(shape[i]);
  return text + "]";
}

SafetensorsHeader parse_safetensors_header(std::string_view text, uint64_t data_bytes) {
  const size_t invalid = find_invalid_utf8(text);
  if (invalid != std::string_view::npos) {
    throw Error("header is not valid UTF-8 (byte " + std::to_string(invalid) + " of the header)");
  }
  const json root = parse_strict_json(text);
  if (!root.is_object()) throw Error("header must be a JSON object, found " + std::string(root.type_name()));

  SafetensorsHeader header;
  for (const auto& item : root.items()) {
    if (item.key() == "__metadata__") {
      header.metadata = parse_metadata(item.value());
      header.has_metadata = true;
      continue;
    }
    header.tensors.push_back(parse_tensor_entry(item.key(), item.value()));
  }
  check_coverage(header.tensors, data_bytes);
  return header;
}

SafetensorsHeader parse_safetensors_bytes(const std::byte* bytes, uint64_t file_bytes, uint64_t& data_offset) {
  static constexpr char kLfsPrefix[] = "version https://git-lfs";
  if (file_bytes >= sizeof kLfsPrefix - 1 && std::memcmp(bytes, kLfsPrefix, sizeof kLfsPrefix - 1) == 0) {
    throw Error("this is a Git LFS pointer file, not the checkpoint; fetch the real file with 'git lfs pull'");
  }
  if (file_bytes < 8) {
    throw Error("file is " + std::to_string(file_bytes) +
                " bytes long, too short for the 8-byte header length of a safetensors file");
  }
  uint64_t header_bytes = 0;
  for (int i = 7; i >= 0; --i) header_bytes = (header_bytes << 8) | std::to_integer<uint64_t>(bytes[i]);
  if (header_bytes == 0) throw Error("header length is 0; a safetensors header is at least \"{}\"");
  if (header_bytes > kMaxHeaderBytes) {
    throw Error("header length " + std::to_string(header_bytes) + " exceeds the limit of " +
                std::to_string(kMaxHeaderBytes) + " bytes");
  }
  if (header_bytes > file_bytes - 8) {
    throw Error("header length " + std::to_string(header_bytes) + " is more than the " +
                std::to_string(file_bytes - 8) + " bytes that follow it (truncated file?)");
  }
  data_offset = 8 + header_bytes;
  std::string_view text(reinterpret_cast<const char*>(bytes + 8), header_bytes);
  return parse_safetensors_header(text, file_bytes - data_offset);
}

SafetensorsFile::SafetensorsFile(const std::string& path) : mapping_(path) {
  try {
    header_ = parse_safetensors_bytes(mapping_.data(), mapping_.size(), data_offset_);
  } catch (const Error& error) {
    throw Error(path + ": " + error.what());
  }
}

}  // namespace rtnq
