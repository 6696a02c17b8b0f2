// The committed testdata/ must be exactly what the generator writes.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <set>
#include <string>

#include "rtnq/checkpoint.hpp"
#include "rtnq/half.hpp"
#include "test_support.hpp"

namespace fs = std::filesystem;
using rtnq::test::TempDir;

namespace {

// Relative paths of the regular files under root.
std::set<std::string> files_under(const fs::path& root) {
  std::set<std::string> files;
  for (const auto& entry : fs::recursive_directory_iterator(root)) {
    if (entry.is_regular_file()) files.insert(fs::relative(entry.path(), root).string());
  }
  return files;
}

const fs::path kTestdata = fs::path(RTNQ_SOURCE_DIR) / "testdata";

}  // namespace

TEST_CASE("regenerated fixtures match testdata") {
  TempDir dir;
  const auto result = rtnq::test::run_command(rtnq::test::shell_quote(RTNQ_MAKE_FIXTURES) + " " +
                                              rtnq::test::shell_quote(dir.path().string()));
  INFO("stderr: " << result.err);
  REQUIRE(result.exit_status == 0);

  // testdata/ has other folders too; compare the ones the generator writes.
  const std::set<std::string> generated = files_under(dir.path());
  std::set<std::string> committed;
  for (const char* folder : {"sample", "sharded"}) {
    for (const std::string& name : files_under(kTestdata / folder)) committed.insert((fs::path(folder) / name).string());
  }
  CHECK(generated == committed);
  for (const std::string& name : generated) {
    CAPTURE(name);
    if (!committed.count(name)) continue;
    CHECK(rtnq::test::read_file(dir.path() / name) == rtnq::test::read_file(kTestdata / name));
  }
}

TEST_CASE("fixtures stay small") {
  uint64_t total_bytes = 0;
  for (const std::string& name : files_under(kTestdata)) total_bytes += fs::file_size(kTestdata / name);
  CHECK(total_bytes < 1'000'000);
  CHECK(fs::file_size(kTestdata / "sample/model.safetensors") < 210'000);
}

TEST_CASE("sharded fixture splits a layer") {
  const rtnq::Checkpoint checkpoint((kTestdata / "sharded").string());
  REQUIRE(checkpoint.files().size() == 3);
  REQUIRE(checkpoint.index().has_value());
  const auto& weight_map = (*checkpoint.index())["weight_map"];
  CHECK(weight_map["model.layers.1.mlp.down_proj.weight"] == "model-00002-of-00003.safetensors");
  CHECK(weight_map["model.layers.1.mlp.down_proj.bias"] == "model-00003-of-00003.safetensors");

  // total_size counts tensor data bytes, as Hugging Face writes it.
  uint64_t data_bytes = 0;
  for (const auto& tensor : checkpoint.tensors()) data_bytes += tensor.info->byte_size();
  CHECK((*checkpoint.index())["metadata"]["total_size"].get<uint64_t>() == data_bytes);

  std::set<std::string> dtypes;
  for (const auto& tensor : checkpoint.tensors()) dtypes.insert(std::string(rtnq::dtype_name(tensor.info->dtype)));
  CHECK(dtypes == std::set<std::string>{"F16", "F32"});
  CHECK(fs::is_regular_file(kTestdata / "sharded/config.json"));
  CHECK(fs::is_regular_file(kTestdata / "sharded/tokenizer.json"));
  CHECK(fs::is_regular_file(kTestdata / "sharded/README.md"));
}

TEST_CASE("sample fixture has rare outliers") {
  // The generator draws weights with standard deviation 0.02 as a sum of 12
  // uniforms, which stays within 6 deviations (0.12). Only the 10x outliers,
  // one value in 128 on average, go beyond.
  const rtnq::SafetensorsFile file((kTestdata / "sample/model.safetensors").string());
  uint64_t weights = 0;
  uint64_t outliers = 0;
  for (const auto& tensor : file.tensors()) {
    if (tensor.shape.size() != 2) continue;
    REQUIRE(tensor.dtype == rtnq::DType::BF16);
    const std::byte* data = file.tensor_data(tensor);
    for (uint64_t i = 0; i < tensor.element_count(); ++i) {
      uint16_t bits;
      std::memcpy(&bits, data + 2 * i, sizeof bits);
      weights += 1;
      if (std::fabs(rtnq::bf16_to_float(bits)) > 0.121f) outliers += 1;
    }
  }
  CHECK(weights == 102400);
  CHECK(outliers > weights / 1000);
  CHECK(outliers < weights / 128);
}
