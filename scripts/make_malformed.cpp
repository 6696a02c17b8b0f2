// rtnq-make-malformed: writes the malformed-file corpus under testdata/malformed/.
//
// Usage: rtnq-make-malformed OUTDIR
//
// Each case is one file that rtnq must reject with exit status 1 and an
// error containing the expected text. OUTDIR/EXPECTED.tsv lists them, one
// line per file: file name, expected text, and why the case is there, separated
// by tabs. The bytes depend on this source alone, so a test regenerates the
// corpus and compares it byte for byte with the committed files. The same
// files seed the fuzzer.
#include <cstdint>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;

struct MalformedCase {
  std::string file_name;
  std::string bytes;
  std::string expected;  // text the error message must contain
  std::string reason;    // a few words on why the case is in the corpus
};

// The 8-byte little-endian header length.
std::string length_prefix(uint64_t length) {
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[size_t(i)] = static_cast<char>((length >> (8 * i)) & 0xff);
  return bytes;
}

std::string file_of(const std::string& header, const std::string& data) {
  return length_prefix(header.size()) + header + data;
}

// One tensor entry of a header, "NAME": {...}, with the name already escaped.
std::string entry(const std::string& name, const std::string& dtype, const std::string& shape,
                  const std::string& offsets) {
  return "\"" + name + "\":{\"dtype\":" + dtype + ",\"shape\":" + shape + ",\"data_offsets\":" + offsets + "}";
}

// A well-formed F32 entry of n elements at [begin, begin + 4n).
std::string f32_entry(const std::string& name, uint64_t n, uint64_t begin) {
  return entry(name, "\"F32\"", "[" + std::to_string(n) + "]",
               "[" + std::to_string(begin) + "," + std::to_string(begin + 4 * n) + "]");
}

// Data bytes with a recognisable pattern (not all zero).
std::string data_bytes(size_t n) {
  std::string bytes(n, '\0');
  for (size_t i = 0; i < n; ++i) bytes[i] = static_cast<char>(0x10 + i % 0x40);
  return bytes;
}

// A valid two-tensor file: "a" F32 [2] at [0, 8) and "b" F32 [4] at [8, 24).
std::string valid_two_tensors() {
  return file_of("{" + f32_entry("a", 2, 0) + "," + f32_entry("b", 4, 8) + "}", data_bytes(24));
}

std::vector<MalformedCase> file_level_cases() {
  std::vector<MalformedCase> cases;
  cases.push_back({"empty-file", "", "file is 0 bytes long", "zero-length download"});
  cases.push_back({"five-bytes", std::string("\x10\x00\x00\x00\x00", 5), "file is 5 bytes long",
                   "shorter than the 8-byte length field"});
  cases.push_back({"seven-bytes", std::string("\x02\x00\x00\x00\x00\x00\x00", 7), "file is 7 bytes long",
                   "one byte short of the length field"});
  cases.push_back({"header-length-past-end", length_prefix(1000) + "{\"a\":1}", "header length 1000 is more than the 7",
                   "length field larger than the file"});
  std::string cut_header = valid_two_tensors().substr(0, 40);
  cases.push_back({"header-cut-short", cut_header, "is more than the 32 bytes that follow it",
                   "download stopped inside the header"});
  cases.push_back({"header-length-2-pow-63", length_prefix(uint64_t(1) << 63) + "{}",
                   "header length 9223372036854775808 exceeds the limit of 100000000 bytes",
                   "length that would overflow signed offsets"});
  cases.push_back({"header-length-max-u64", length_prefix(UINT64_MAX) + "{}",
                   "header length 18446744073709551615 exceeds the limit",
                   "8 + length wraps around in 64 bits"});
  cases.push_back({"header-length-zero", length_prefix(0) + "{}", "header length is 0", "no header at all"});
  cases.push_back({"header-over-100-mb", length_prefix(100'000'001) + "{}",
                   "header length 100000001 exceeds the limit of 100000000 bytes", "one byte over the header limit"});
  cases.push_back({"git-lfs-pointer",
                   "version https://git-lfs.github.com/spec/v1\n"
                   "oid sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n"
                   "size 4976698672\n",
                   "Git LFS pointer file", "clone without git-lfs installed"});
  return cases;
}

std::vector<MalformedCase> encoding_cases() {
  std::vector<MalformedCase> cases;
  cases.push_back({"utf8-invalid-byte", file_of("{\"a\xff\":1}", ""), "header is not valid UTF-8 (byte 3",
                   "0xff never occurs in UTF-8"});
  cases.push_back({"utf8-overlong-slash", file_of("{\"\xc0\xaf\":1}", ""), "header is not valid UTF-8 (byte 2",
                   "overlong encoding of '/'"});
  cases.push_back({"utf8-surrogate", file_of("{\"\xed\xa0\x80\":1}", ""), "header is not valid UTF-8 (byte 2",
                   "UTF-16 surrogate encoded as UTF-8"});
  cases.push_back({"utf8-cut-sequence", file_of("{\"a\":1}\xe2\x82", ""), "header is not valid UTF-8 (byte 7",
                   "multi-byte sequence cut by the header end"});
  cases.push_back({"json-not-json", file_of("hello, world", ""), "header is not valid JSON", "plain text header"});
  cases.push_back({"json-cut-short", file_of("{\"a\":{\"dtype\":", ""), "header is not valid JSON",
                   "JSON that ends mid-object"});
  cases.push_back({"json-trailing-garbage", file_of("{} {}", ""), "header is not valid JSON",
                   "a second value after the object"});
  cases.push_back({"json-nan-dimension",
                   file_of("{" + entry("a", "\"F32\"", "[NaN]", "[0,4]") + "}", data_bytes(4)),
                   "header is not valid JSON", "NaN is not a JSON literal"});
  cases.push_back({"json-lone-surrogate-escape", file_of("{\"\\ud800\":1}", ""), "header is not valid JSON",
                   "escaped surrogate without its pair"});
  cases.push_back({"json-number-overflow",
                   file_of("{" + entry("a", "\"F32\"", "[1e4649]", "[0,4]") + "}", data_bytes(4)),
                   "header has a number outside the range of a double: number overflow parsing '1e4649'",
                   "1e4649 overflows a double (found by fuzzing)"});
  cases.push_back({"json-array", file_of("[1,2]", ""), "header must be a JSON object, found array",
                   "top level is an array"});
  cases.push_back({"json-string", file_of("\"model\"", ""), "header must be a JSON object, found string",
                   "top level is a string"});
  cases.push_back({"json-null", file_of("null", ""), "header must be a JSON object, found null",
                   "top level is null"});
  const int bomb_depth = 50'000;
  cases.push_back({"depth-bomb-arrays", file_of(std::string(bomb_depth, '[') + std::string(bomb_depth, ']'), ""),
                   "header JSON is nested more than 3 levels deep", "50000 nested arrays"});
  std::string objects;
  for (int i = 0; i < bomb_depth; ++i) objects += "{\"a\":";
  objects += "1" + std::string(bomb_depth, '}');
  cases.push_back({"depth-bomb-objects", file_of(objects, ""), "header JSON is nested more than 3 levels deep",
                   "50000 nested objects"});
  cases.push_back({"depth-in-shape",
                   file_of("{" + entry("a", "\"F32\"", "[[[[2]]]]", "[0,8]") + "}", data_bytes(8)),
                   "header JSON is nested more than 3 levels deep", "nesting hidden inside a shape"});
  return cases;
}

std::vector<MalformedCase> tensor_field_cases() {
  std::vector<MalformedCase> cases;
  const std::string eight = data_bytes(8);
  cases.push_back({"dtype-unknown", file_of("{" + entry("w", "\"F128\"", "[2]", "[0,8]") + "}", eight),
                   "tensor 'w' has the unknown dtype \"F128\"", "dtype no writer uses"});
  cases.push_back({"dtype-lower-case", file_of("{" + entry("w", "\"f32\"", "[2]", "[0,8]") + "}", eight),
                   "tensor 'w' has the unknown dtype \"f32\"", "dtype names are case-sensitive"});
  cases.push_back({"dtype-number", file_of("{" + entry("w", "32", "[2]", "[0,8]") + "}", eight),
                   "tensor 'w': dtype must be a string, found 32", "dtype given as a number"});
  cases.push_back({"field-dtype-missing", file_of("{\"w\":{\"shape\":[2],\"data_offsets\":[0,8]}}", eight),
                   "tensor 'w' has no \"dtype\" field", "entry without dtype"});
  cases.push_back({"field-shape-missing", file_of("{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", eight),
                   "tensor 'w' has no \"shape\" field", "entry without shape"});
  cases.push_back({"field-offsets-missing", file_of("{\"w\":{\"dtype\":\"F32\",\"shape\":[2]}}", eight),
                   "tensor 'w' has no \"data_offsets\" field", "entry without data_offsets"});
  cases.push_back({"field-extra",
                   file_of("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"offset\":0}}", eight),
                   "tensor 'w' has the unknown field 'offset'", "a field the format does not define"});
  cases.push_back({"entry-not-object", file_of("{\"w\":[0,8]}", eight), "tensor 'w' must be a JSON object, found array",
                   "tensor described by an array"});
  cases.push_back({"shape-not-array", file_of("{" + entry("w", "\"F32\"", "2", "[0,8]") + "}", eight),
                   "tensor 'w': shape must be an array, found 2", "shape given as a number"});
  cases.push_back({"shape-negative", file_of("{" + entry("w", "\"F32\"", "[-2]", "[0,8]") + "}", eight),
                   "shape dimension must be a non-negative integer, found -2", "negative dimension"});
  cases.push_back({"shape-fractional", file_of("{" + entry("w", "\"F32\"", "[2.5]", "[0,10]") + "}", data_bytes(10)),
                   "shape dimension must be a non-negative integer, found 2.5", "fractional dimension"});
  cases.push_back({"shape-string", file_of("{" + entry("w", "\"F32\"", "[\"2\"]", "[0,8]") + "}", eight),
                   "shape dimension must be a non-negative integer, found \"2\"", "dimension given as a string"});
  cases.push_back({"shape-dimension-2-pow-63",
                   file_of("{" + entry("w", "\"U8\"", "[9223372036854775808]", "[0,8]") + "}", eight),
                   "shape dimension 9223372036854775808 is too large", "dimension outside int64"});
  cases.push_back({"shape-dimension-beyond-u64",
                   file_of("{" + entry("w", "\"U8\"", "[18446744073709551616]", "[0,8]") + "}", eight),
                   "shape dimension must be a non-negative integer, found 1.8446744073709552e+19",
                   "dimension that JSON reads as a float"});
  cases.push_back({"shape-product-overflow",
                   file_of("{" + entry("w", "\"F32\"", "[4294967296,4294967296]", "[0,8]") + "}", eight),
                   "has more than 2^64 elements", "product of dimensions wraps at 2^64"});
  cases.push_back({"shape-bits-overflow",
                   file_of("{" + entry("w", "\"F64\"", "[2305843009213693952]", "[0,8]") + "}", eight),
                   "has a size in bits that overflows 64 bits", "2^61 F64 elements need 2^67 bits"});
  cases.push_back({"shape-f4-half-byte", file_of("{" + entry("w", "\"F4\"", "[3]", "[0,2]") + "}", data_bytes(2)),
                   "tensor 'w': 3 elements of F4 do not fill whole bytes", "packed dtype with an odd count"});
  cases.push_back({"size-mismatch", file_of("{" + entry("w", "\"F32\"", "[2,2]", "[0,8]") + "}", eight),
                   "data_offsets [0,8] span 8 bytes, but shape [2, 2] of F32 needs 16",
                   "shape and byte length disagree"});
  cases.push_back({"size-mismatch-bf16", file_of("{" + entry("w", "\"BF16\"", "[3]", "[0,8]") + "}", eight),
                   "span 8 bytes, but shape [3] of BF16 needs 6", "BF16 size counted as F32"});
  return cases;
}

std::vector<MalformedCase> offset_cases() {
  std::vector<MalformedCase> cases;
  const std::string eight = data_bytes(8);
  cases.push_back({"offsets-reversed", file_of("{" + entry("w", "\"F32\"", "[0]", "[8,0]") + "}", eight),
                   "data_offsets [8,0] end before they begin", "end before begin"});
  cases.push_back({"offsets-one-number", file_of("{" + entry("w", "\"F32\"", "[2]", "[8]") + "}", eight),
                   "data_offsets must be an array of two integers, found [8]", "only one offset"});
  cases.push_back({"offsets-negative", file_of("{" + entry("w", "\"F32\"", "[2]", "[-8,0]") + "}", eight),
                   "data_offsets begin must be a non-negative integer, found -8", "negative offset"});
  cases.push_back({"offsets-huge", file_of("{" + entry("w", "\"U8\"", "[8]", "[18446744073709551608,0]") + "}", eight),
                   "data_offsets begin 18446744073709551608 is too large", "offset that wraps when added"});
  cases.push_back({"offsets-out-of-range",
                   file_of("{" + entry("w", "\"F32\"", "[2]", "[1000,1008]") + "}", eight),
                   "tensor 'w' ends past the end of the file: tensors need 1008 bytes of data but the data section has 8",
                   "tensor entirely past the data"});
  cases.push_back({"offsets-overlap",
                   file_of("{" + f32_entry("a", 2, 0) + "," + f32_entry("b", 2, 4) + "}", data_bytes(12)),
                   "tensor 'b' at bytes [4, 12) overlaps tensor 'a' which ends at 8", "two tensors share bytes"});
  cases.push_back({"offsets-same-range",
                   file_of("{" + f32_entry("a", 2, 0) + "," + f32_entry("b", 2, 0) + "}", eight),
                   "at bytes [0, 8) overlaps tensor", "two tensors on identical bytes"});
  cases.push_back({"offsets-gap",
                   file_of("{" + f32_entry("a", 2, 0) + "," + f32_entry("b", 2, 12) + "}", data_bytes(20)),
                   "data section has a gap of 4 bytes at offset 8, before tensor 'b'", "hole between tensors"});
  cases.push_back({"offsets-gap-at-start", file_of("{" + f32_entry("a", 2, 4) + "}", data_bytes(12)),
                   "data section has a gap of 4 bytes at offset 0, before tensor 'a'", "hole before the first tensor"});
  cases.push_back({"offsets-not-covering", file_of("{" + f32_entry("a", 2, 0) + "}", data_bytes(24)),
                   "data section has 16 bytes after the last tensor that no tensor covers",
                   "data no tensor describes"});
  const std::string whole = valid_two_tensors();
  cases.push_back({"truncated-data", whole.substr(0, whole.size() - 5),
                   "tensor 'b' ends past the end of the file: tensors need 24 bytes of data but the data section has 19",
                   "download stopped inside the data"});
  cases.push_back({"truncated-to-header", whole.substr(0, whole.size() - 24),
                   "tensors need 8 bytes of data but the data section has 0", "data section missing entirely"});
  return cases;
}

std::vector<MalformedCase> name_and_metadata_cases() {
  std::vector<MalformedCase> cases;
  const std::string eight = data_bytes(8);
  cases.push_back({"duplicate-name", file_of("{" + f32_entry("w", 2, 0) + "," + f32_entry("w", 2, 0) + "}", eight),
                   "header has the key 'w' twice", "same tensor name twice"});
  cases.push_back({"duplicate-name-escaped",
                   file_of("{" + f32_entry("w", 2, 0) + "," + f32_entry("\\u0077", 2, 8) + "}", data_bytes(16)),
                   "header has the key 'w' twice", "second copy spelled as a \\u escape"});
  cases.push_back({"duplicate-field",
                   file_of("{\"w\":{\"dtype\":\"F32\",\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,8]}}", eight),
                   "header has the key 'dtype' twice", "dtype given twice in one entry"});
  cases.push_back({"duplicate-metadata",
                   file_of("{\"__metadata__\":{},\"__metadata__\":{}," + f32_entry("w", 2, 0) + "}", eight),
                   "header has the key '__metadata__' twice", "two metadata maps"});
  cases.push_back({"duplicate-metadata-key",
                   file_of("{\"__metadata__\":{\"format\":\"pt\",\"format\":\"tf\"}," + f32_entry("w", 2, 0) + "}", eight),
                   "header has the key 'format' twice", "repeated key inside the metadata"});
  cases.push_back({"metadata-array", file_of("{\"__metadata__\":[\"pt\"]," + f32_entry("w", 2, 0) + "}", eight),
                   "__metadata__ must be a JSON object of strings, found array", "metadata as a list"});
  cases.push_back({"metadata-number-value",
                   file_of("{\"__metadata__\":{\"step\":100}," + f32_entry("w", 2, 0) + "}", eight),
                   "__metadata__ value of 'step' must be a string, found 100", "metadata value not a string"});
  cases.push_back({"metadata-null-value",
                   file_of("{\"__metadata__\":{\"format\":null}," + f32_entry("w", 2, 0) + "}", eight),
                   "__metadata__ value of 'format' must be a string, found null", "metadata value null"});
  cases.push_back({"metadata-nested-object",
                   file_of("{\"__metadata__\":{\"config\":{\"bits\":\"4\"}}," + f32_entry("w", 2, 0) + "}", eight),
                   "__metadata__ value of 'config' must be a string, found {\"bits\":\"4\"}", "metadata value nested"});
  cases.push_back({"metadata-as-tensor", file_of("{" + f32_entry("__metadata__", 2, 0) + "}", eight),
                   "__metadata__ is described like a tensor, but the name is reserved",
                   "tensor named __metadata__"});
  cases.push_back({"name-empty", file_of("{" + f32_entry("", 2, 0) + "}", eight), "a tensor has an empty name",
                   "tensor named \"\""});
  cases.push_back({"name-escaped-control", file_of("{" + f32_entry("w\\u0007", 2, 0) + "}", eight),
                   "tensor 'w\\x07' has a control character in its name", "BEL written as a \\u escape"});
  cases.push_back({"name-raw-newline", file_of("{" + f32_entry("w\nx", 2, 0) + "}", eight),
                   "header is not valid JSON", "raw line feed inside a JSON string"});
  cases.push_back({"name-delete-character", file_of("{" + f32_entry("w\x7f", 2, 0) + "}", eight),
                   "tensor 'w\\x7f' has a control character in its name", "DEL is valid JSON but not a name"});
  return cases;
}

void write_bytes(const fs::path& path, const std::string& bytes) {
  std::ofstream stream(path, std::ios::binary | std::ios::trunc);
  stream.write(bytes.data(), std::streamsize(bytes.size()));
  if (!stream) throw std::runtime_error("cannot write " + path.string());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: rtnq-make-malformed OUTDIR\n");
    return 2;
  }
  try {
    const fs::path out_dir = argv[1];
    fs::create_directories(out_dir);
    std::vector<MalformedCase> cases;
    for (auto* group : {file_level_cases, encoding_cases, tensor_field_cases, offset_cases, name_and_metadata_cases}) {
      for (MalformedCase& item : group()) cases.push_back(std::move(item));
    }
    std::string table;
    for (const MalformedCase& item : cases) {
      const std::string file_name = item.file_name + ".safetensors";
      write_bytes(out_dir / file_name, item.bytes);
      table += file_name + "\t" + item.expected + "\t" + item.reason + "\n";
    }
    write_bytes(out_dir / "EXPECTED.tsv", table);
    std::printf("wrote %zu malformed files to %s\n", cases.size(), out_dir.string().c_str());
  } catch (const std::exception& error) {
    std::fprintf(stderr, "rtnq-make-malformed: error: %s\n", error.what());
    return 1;
  }
  return 0;
}
