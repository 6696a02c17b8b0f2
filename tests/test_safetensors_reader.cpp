// The safetensors reader rejects every malformed file with a message naming
// the file and the problem, and reads valid edge cases correctly.
#include <doctest/doctest.h>

#include <cstring>
#include <string>
#include <vector>

#include "rtnq/error.hpp"
#include "rtnq/safetensors.hpp"
#include "test_support.hpp"

using rtnq::test::TempDir;
using rtnq::test::write_safetensors;

namespace {

// Opens path and returns the error message, or "" if the file was accepted.
std::string open_error(const std::string& path) {
  try {
    rtnq::SafetensorsFile file(path);
  } catch (const rtnq::Error& error) {
    return error.what();
  }
  return "";
}

// A header entry for one tensor.
std::string entry(const std::string& name, const std::string& dtype, const std::string& shape, uint64_t begin,
                  uint64_t end) {
  return "\"" + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape + ",\"data_offsets\":[" +
         std::to_string(begin) + "," + std::to_string(end) + "]}";
}

struct MalformedCase {
  std::string reason;  // why the row is in the table
  std::string header;
  std::string data;
  std::vector<std::string> expected_words;
};

}  // namespace

TEST_CASE("malformed headers name the problem") {
  const std::string f32_pair = entry("w", "F32", "[2]", 0, 8);
  const std::vector<MalformedCase> cases = {
      {"JSON cut short", "{\"w\":{\"dtype\":", "", {"not valid JSON"}},
      {"header is an array", "[1, 2]", "", {"must be a JSON object", "array"}},
      {"dtype nobody defines", "{" + entry("w", "Q4_K", "[2]", 0, 2) + "}", std::string(2, '\0'),
       {"unknown dtype", "Q4_K", "'w'"}},
      {"shape needs 24 bytes, offsets give 20", "{" + entry("w", "F32", "[2, 3]", 0, 20) + "}",
       std::string(20, '\0'), {"'w'", "span 20 bytes", "needs 24"}},
      {"offsets past the end of the data", "{" + f32_pair + "}", std::string(4, '\0'),
       {"need 8 bytes", "has 4"}},
      {"offsets end before they begin", "{" + entry("w", "F32", "[0]", 8, 4) + "}", std::string(8, '\0'),
       {"end before they begin"}},
      {"two tensors share bytes 4..8",
       "{" + entry("a", "F32", "[2]", 0, 8) + "," + entry("b", "F32", "[2]", 4, 12) + "}", std::string(12, '\0'),
       {"overlaps", "'a'", "'b'"}},
      {"4 bytes between two tensors",
       "{" + entry("a", "F32", "[1]", 0, 4) + "," + entry("b", "F32", "[1]", 8, 12) + "}", std::string(12, '\0'),
       {"gap of 4 bytes", "offset 4", "'b'"}},
      {"hole before the first tensor", "{" + entry("a", "F32", "[1]", 4, 8) + "}", std::string(8, '\0'),
       {"gap of 4 bytes", "offset 0"}},
      {"bytes after the last tensor", "{" + entry("a", "F32", "[1]", 0, 4) + "}", std::string(8, '\0'),
       {"4 bytes after the last tensor"}},
      {"same tensor name twice", "{" + f32_pair + "," + f32_pair + "}", std::string(8, '\0'),
       {"'w'", "twice"}},
      {"metadata value is a number", "{\"__metadata__\":{\"step\":100}}", "",
       {"__metadata__", "'step'", "must be a string", "100"}},
      {"metadata is a string", "{\"__metadata__\":\"pt\"}", "", {"__metadata__", "must be a JSON object"}},
      {"header is not UTF-8", "{\"w\xff\":{}}", "", {"UTF-8"}},
      {"negative dimension", "{" + entry("w", "F32", "[-1]", 0, 0) + "}", "", {"non-negative integer"}},
      {"fractional dimension", "{" + entry("w", "F32", "[1.5]", 0, 6) + "}", std::string(6, '\0'),
       {"non-negative integer"}},
      {"shape overflows 64 bits", "{" + entry("w", "F32", "[4294967296, 4294967296, 2]", 0, 0) + "}", "",
       {"more than 2^64 elements"}},
      {"dtype field missing", "{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", std::string(4, '\0'),
       {"'w'", "no \"dtype\" field"}},
      {"unknown tensor field", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":1}}",
       std::string(4, '\0'), {"unknown field", "'x'"}},
      {"three data offsets", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}",
       std::string(4, '\0'), {"data_offsets must be an array of two integers"}},
      {"nesting deeper than a header needs", "{\"w\":{\"dtype\":\"F32\",\"shape\":[[1]],\"data_offsets\":[0,4]}}",
       std::string(4, '\0'), {"nested"}},
  };

  TempDir dir;
  for (const MalformedCase& bad : cases) {
    CAPTURE(bad.reason);
    const std::string path = write_safetensors(dir, "bad.safetensors", bad.header, bad.data);
    const std::string message = open_error(path);
    CAPTURE(message);
    CHECK(message.rfind(path + ": ", 0) == 0);
    CHECK(message.find("[json.exception") == std::string::npos);
    for (const std::string& word : bad.expected_words) {
      CAPTURE(word);
      CHECK(message.find(word) != std::string::npos);
    }
  }
}

TEST_CASE("header longer than file") {
  TempDir dir;
  const std::string path = dir / "short.safetensors";
  rtnq::test::write_file(path, rtnq::test::length_prefix(1000) + "{}");
  const std::string message = open_error(path);
  CHECK(message.rfind(path + ": ", 0) == 0);
  CHECK(message.find("header length 1000") != std::string::npos);
  CHECK(message.find("2 bytes that follow") != std::string::npos);
}

TEST_CASE("header over the 100 MB limit") {
  // Only the length field claims 100 MB + 1; the file itself is 10 bytes.
  TempDir dir;
  const std::string path = dir / "huge.safetensors";
  rtnq::test::write_file(path, rtnq::test::length_prefix(100'000'001) + "{}");
  const std::string message = open_error(path);
  CHECK(message.rfind(path + ": ", 0) == 0);
  CHECK(message.find("100000001") != std::string::npos);
  CHECK(message.find("exceeds the limit") != std::string::npos);
}

TEST_CASE("file shorter than length field") {
  TempDir dir;
  const std::string path = dir / "tiny.safetensors";
  rtnq::test::write_file(path, std::string(5, '\0'));
  const std::string message = open_error(path);
  CHECK(message.rfind(path + ": ", 0) == 0);
  CHECK(message.find("5 bytes long") != std::string::npos);
}

TEST_CASE("zero header length") {
  TempDir dir;
  const std::string path = dir / "empty-header.safetensors";
  rtnq::test::write_file(path, rtnq::test::length_prefix(0));
  const std::string message = open_error(path);
  CHECK(message.rfind(path + ": ", 0) == 0);
  CHECK(message.find("header length is 0") != std::string::npos);
}

TEST_CASE("missing file names the path") {
  TempDir dir;
  const std::string path = dir / "absent.safetensors";
  const std::string message = open_error(path);
  CHECK(message.find(path) != std::string::npos);
}

TEST_CASE("file with zero tensors") {
  TempDir dir;
  const rtnq::SafetensorsFile file(write_safetensors(dir, "empty.safetensors", "{}", ""));
  CHECK(file.tensors().empty());
  CHECK_FALSE(file.header().has_metadata);
  CHECK(file.data_offset() == 10);
  CHECK(file.file_bytes() == 10);
}

TEST_CASE("file with only metadata") {
  TempDir dir;
  const rtnq::SafetensorsFile file(
      write_safetensors(dir, "meta.safetensors", "{\"__metadata__\":{\"format\":\"pt\",\"note\":\"\"}}", ""));
  CHECK(file.tensors().empty());
  CHECK(file.header().has_metadata);
  REQUIRE(file.header().metadata.size() == 2);
  CHECK(file.header().metadata[0].first == "format");
  CHECK(file.header().metadata[0].second == "pt");
  CHECK(file.header().metadata[1].first == "note");
  CHECK(file.header().metadata[1].second == "");
}

TEST_CASE("zero-element tensor reads back") {
  // An empty [0, 64] tensor sits at offsets [4, 4], between two 4-byte tensors.
  TempDir dir;
  const std::string header = "{" + entry("a", "F32", "[1]", 0, 4) + "," + entry("empty", "F32", "[0, 64]", 4, 4) +
                             "," + entry("b", "F32", "[1]", 4, 8) + "}";
  const rtnq::SafetensorsFile file(write_safetensors(dir, "zero.safetensors", header, std::string(8, '\0')));
  REQUIRE(file.tensors().size() == 3);
  const rtnq::TensorInfo* empty = nullptr;
  for (const auto& tensor : file.tensors()) {
    if (tensor.name == "empty") empty = &tensor;
  }
  REQUIRE(empty != nullptr);
  CHECK(empty->shape == std::vector<int64_t>{0, 64});
  CHECK(empty->element_count() == 0);
  CHECK(empty->byte_size() == 0);
  CHECK(empty->begin == 4);
}

TEST_CASE("zero-element tensor at the end") {
  TempDir dir;
  const std::string header = "{" + entry("a", "F32", "[1]", 0, 4) + "," + entry("empty", "BF16", "[0, 64]", 4, 4) + "}";
  const rtnq::SafetensorsFile file(write_safetensors(dir, "zero-end.safetensors", header, std::string(4, '\0')));
  CHECK(file.tensors().size() == 2);
}

TEST_CASE("header padded with trailing spaces") {
  // Writers (rtnq's own included) pad the header with spaces so the data
  // starts at a multiple of 8. The padding counts in the header length.
  TempDir dir;
  std::string header = "{" + entry("x", "F32", "[2]", 0, 8) + "}";
  header.append(16 - header.size() % 8, ' ');
  const float values[2] = {1.5f, -2.25f};
  std::string data(8, '\0');
  std::memcpy(data.data(), values, sizeof values);
  const rtnq::SafetensorsFile file(write_safetensors(dir, "padded.safetensors", header, data));

  CHECK(file.data_offset() == 8 + header.size());
  CHECK(file.data_offset() % 8 == 0);
  REQUIRE(file.tensors().size() == 1);
  float read[2];
  std::memcpy(read, file.tensor_data(file.tensors()[0]), sizeof read);
  CHECK(read[0] == 1.5f);
  CHECK(read[1] == -2.25f);
}

TEST_CASE("tensors sorted by data offset") {
  // Header order is z, a; data order is a, z.
  TempDir dir;
  const std::string header = "{" + entry("z", "F16", "[2]", 4, 8) + "," + entry("a", "F16", "[2]", 0, 4) + "}";
  const std::string data = "\x01\x02\x03\x04\x05\x06\x07\x08";
  const rtnq::SafetensorsFile file(write_safetensors(dir, "order.safetensors", header, data));
  REQUIRE(file.tensors().size() == 2);
  CHECK(file.tensors()[0].name == "a");
  CHECK(file.tensors()[1].name == "z");
  CHECK(std::to_integer<int>(file.tensor_data(file.tensors()[1])[0]) == 5);
}

TEST_CASE("every dtype name parses") {
  const std::vector<std::pair<std::string, int>> dtypes = {
      {"BOOL", 8}, {"U8", 8},   {"I8", 8},  {"U16", 16}, {"I16", 16}, {"U32", 32}, {"I32", 32},
      {"U64", 64}, {"I64", 64}, {"F16", 16}, {"BF16", 16}, {"F32", 32}, {"F64", 64}, {"F8_E4M3", 8},
      {"F8_E5M2", 8}, {"F8_E8M0", 8}, {"F4", 4}, {"F6_E2M3", 6}, {"F6_E3M2", 6},
  };
  for (const auto& [name, bits] : dtypes) {
    CAPTURE(name);
    const auto dtype = rtnq::parse_dtype(name);
    REQUIRE(dtype.has_value());
    CHECK(rtnq::dtype_name(*dtype) == name);
    CHECK(rtnq::dtype_bits(*dtype) == bits);
  }
  CHECK_FALSE(rtnq::parse_dtype("bf16").has_value());
  CHECK_FALSE(rtnq::parse_dtype("").has_value());
}

TEST_CASE("F4 tensor of odd length rejected") {
  // Three 4-bit values do not fill whole bytes.
  TempDir dir;
  const std::string path = write_safetensors(dir, "f4.safetensors", "{" + entry("w", "F4", "[3]", 0, 2) + "}",
                                             std::string(2, '\0'));
  const std::string message = open_error(path);
  CHECK(message.find("do not fill whole bytes") != std::string::npos);
}

TEST_CASE("truncated files all rejected") {
  // Every prefix of a valid file that cuts the header or the data is
  // rejected with an Error, never accepted or read past its end.
  TempDir dir;
  const std::string header = "{\"__metadata__\":{\"format\":\"pt\"}," + entry("a", "F32", "[2, 2]", 0, 16) + "," +
                             entry("b", "BF16", "[3]", 16, 22) + "}";
  const std::string whole = rtnq::test::length_prefix(header.size()) + header + std::string(22, '\x3f');
  const std::string path = dir / "cut.safetensors";
  rtnq::test::write_file(path, whole);
  REQUIRE(open_error(path) == "");

  for (size_t length = 0; length < whole.size(); ++length) {
    CAPTURE(length);
    rtnq::test::write_file(path, whole.substr(0, length));
    const std::string message = open_error(path);
    CHECK(message.rfind(path + ": ", 0) == 0);
  }
}
