#include <algorithm>
#include <vector>

#include <nlohmann/json.hpp>

#include "rtnq/safetensors.hpp"

namespace rtnq {

SafetensorsLayout plan_safetensors_layout(std::vector<OutputTensor> tensors, const Metadata& metadata,
                                          bool write_metadata) {
  std::stable_sort(tensors.begin(), tensors.end(), [](const OutputTensor& a, const OutputTensor& b) {
    return dtype_bits(a.dtype) > dtype_bits(b.dtype);
  });

  nlohmann::ordered_json root = nlohmann::ordered_json::object();
  if (write_metadata) {
    nlohmann::ordered_json entries = nlohmann::ordered_json::object();
    for (const auto& [key, value] : metadata) entries[key] = value;
    root["__metadata__"] = entries;
  }
  SafetensorsLayout layout;
  uint64_t offset = 0;
  for (const OutputTensor& tensor : tensors) {
    root[tensor.name] = {{"dtype", std::string(dtype_name(tensor.dtype))},
                         {"shape", tensor.shape},
                         {"data_offsets", {offset, offset + tensor.byte_size}}};
    layout.file_offsets.push_back(offset);
    offset += tensor.byte_size;
  }

  std::string text = root.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // so the data section starts at a multiple of 8
  layout.header.resize(8);
  uint64_t length = text.size();
  for (int i = 0; i < 8; ++i) layout.header[size_t(i)] = static_cast<char>((length >> (8 * i)) & 0xff);
  layout.header += text;
  for (uint64_t& file_offset : layout.file_offsets) file_offset += layout.header.size();
  layout.file_bytes = layout.header.size() + offset;
  layout.tensors = std::move(tensors);
  return layout;
}

}  // namespace rtnq
