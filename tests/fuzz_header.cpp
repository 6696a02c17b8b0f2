// libFuzzer target for the safetensors reader. Build with -DRTNQ_FUZZ=ON and
// clang; scripts/fuzz.sh runs it seeded with testdata/malformed/.
//
// Each input is used twice:
//  1. as a whole file, through parse_safetensors_bytes, the validation that
//     SafetensorsFile runs on its mapping;
//  2. as a bare header: bytes 8.. are the JSON text and bytes 0..7 the
//     data section size given to parse_safetensors_header, so mutations of
//     the JSON are not wasted on a length field that no longer matches.
// Rejection with rtnq::Error is the expected outcome for most inputs. An
// accepted input must satisfy the invariants the rest of rtnq relies on, and
// must survive a round trip through the writer's layout planner; a violation
// aborts, which libFuzzer reports as a crash.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "rtnq/error.hpp"
#include "rtnq/safetensors.hpp"

namespace {

void require(bool condition, const char* what) {
  if (condition) return;
  std::fprintf(stderr, "fuzz_header: invariant violated: %s\n", what);
  std::abort();
}

// Checks what every reader of an accepted header assumes: tensors sorted by
// offset, laid end to end over exactly data_bytes, sizes matching shapes.
void check_header_invariants(const rtnq::SafetensorsHeader& header, uint64_t data_bytes) {
  uint64_t expected_begin = 0;
  for (const rtnq::TensorInfo& tensor : header.tensors) {
    require(!tensor.name.empty(), "tensor name is empty");
    require(tensor.begin == expected_begin, "tensors are not contiguous and sorted");
    require(tensor.end >= tensor.begin, "tensor ends before it begins");
    require(tensor.end <= data_bytes, "tensor ends past the data section");
    const uint64_t bits = tensor.element_count() * uint64_t(rtnq::dtype_bits(tensor.dtype));
    require(bits % 8 == 0 && bits / 8 == tensor.byte_size(), "byte size disagrees with shape and dtype");
    for (int64_t dimension : tensor.shape) require(dimension >= 0, "negative dimension accepted");
    expected_begin = tensor.end;
  }
  require(expected_begin == data_bytes, "data section not covered exactly");
}

// Reads every byte of every tensor, so AddressSanitizer detects any read past
// the input buffer (libFuzzer hands over an exactly sized heap copy).
uint64_t checksum_tensor_data(const std::byte* data_section, const rtnq::SafetensorsHeader& header) {
  uint64_t sum = 0;
  for (const rtnq::TensorInfo& tensor : header.tensors) {
    const std::byte* first = data_section + tensor.begin;
    for (uint64_t i = 0; i < tensor.byte_size(); ++i) sum = sum * 31 + std::to_integer<uint64_t>(first[i]);
  }
  return sum;
}

// Rewrites the accepted file with plan_safetensors_layout, parses the result
// again and checks that every tensor, its bytes and the metadata survive.
void check_round_trip(const std::byte* data_section, const rtnq::SafetensorsHeader& header) {
  std::vector<rtnq::OutputTensor> outputs;
  for (const rtnq::TensorInfo& tensor : header.tensors) {
    outputs.push_back({tensor.name, tensor.dtype, tensor.shape, tensor.byte_size()});
  }
  const rtnq::SafetensorsLayout layout = rtnq::plan_safetensors_layout(outputs, header.metadata, header.has_metadata);
  std::map<std::string, const rtnq::TensorInfo*> originals;
  for (const rtnq::TensorInfo& tensor : header.tensors) originals[tensor.name] = &tensor;

  std::vector<std::byte> file(layout.file_bytes);
  std::memcpy(file.data(), layout.header.data(), layout.header.size());
  for (size_t i = 0; i < layout.tensors.size(); ++i) {
    const rtnq::TensorInfo& original = *originals.at(layout.tensors[i].name);
    if (original.byte_size() == 0) continue;
    std::memcpy(file.data() + layout.file_offsets[i], data_section + original.begin, original.byte_size());
  }

  uint64_t data_offset = 0;
  const rtnq::SafetensorsHeader reread = rtnq::parse_safetensors_bytes(file.data(), file.size(), data_offset);
  require(data_offset % 8 == 0, "rewritten data section is not 8-byte aligned");
  require(reread.tensors.size() == header.tensors.size(), "round trip changed the tensor count");
  require(reread.metadata == header.metadata, "round trip changed the metadata");
  require(reread.has_metadata == header.has_metadata, "round trip dropped or added __metadata__");
  for (const rtnq::TensorInfo& tensor : reread.tensors) {
    const auto found = originals.find(tensor.name);
    require(found != originals.end(), "round trip invented a tensor name");
    const rtnq::TensorInfo& original = *found->second;
    require(tensor.dtype == original.dtype, "round trip changed a dtype");
    require(tensor.shape == original.shape, "round trip changed a shape");
    require(tensor.byte_size() == original.byte_size(), "round trip changed a byte size");
    require(tensor.byte_size() == 0 || std::memcmp(file.data() + data_offset + tensor.begin,
                                                   data_section + original.begin, tensor.byte_size()) == 0,
            "round trip changed tensor bytes");
  }
}

void fuzz_whole_file(const std::byte* bytes, size_t size) {
  rtnq::SafetensorsHeader header;
  uint64_t data_offset = 0;
  try {
    header = rtnq::parse_safetensors_bytes(bytes, size, data_offset);
  } catch (const rtnq::Error&) {
    return;
  }
  require(data_offset >= 8 && data_offset <= size, "data offset outside the file");
  check_header_invariants(header, size - data_offset);
  volatile uint64_t sink = checksum_tensor_data(bytes + data_offset, header);
  (void)sink;
  check_round_trip(bytes + data_offset, header);
}

void fuzz_bare_header(const std::byte* bytes, size_t size) {
  if (size < 8) return;
  uint64_t data_bytes = 0;
  std::memcpy(&data_bytes, bytes, 8);
  const std::string_view text(reinterpret_cast<const char*>(bytes + 8), size - 8);
  rtnq::SafetensorsHeader header;
  try {
    header = rtnq::parse_safetensors_header(text, data_bytes);
  } catch (const rtnq::Error&) {
    return;
  }
  check_header_invariants(header, data_bytes);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto* bytes = reinterpret_cast<const std::byte*>(data);
  fuzz_whole_file(bytes, size);
  fuzz_bare_header(bytes, size);
  return 0;
}
