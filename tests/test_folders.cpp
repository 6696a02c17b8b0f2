// Folder checkpoints: the sharded fixture quantized into a folder, and
// broken shard indexes rejected before anything is written.
#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "checkpoint_helpers.hpp"
#include "rtnq/safetensors.hpp"
#include "test_support.hpp"

namespace fs = std::filesystem;
using json = nlohmann::json;
using ordered_json = nlohmann::ordered_json;
using rtnq::SafetensorsFile;
using rtnq::TensorInfo;
using rtnq::test::folder_entries;
using rtnq::test::is_one_error_line;
using rtnq::test::read_file;
using rtnq::test::run_rtnq;
using rtnq::test::shell_quote;
using rtnq::test::TempDir;
using rtnq::test::write_file;

namespace {

using rtnq::test::is_quantized_weight;
using rtnq::test::kShards;
using rtnq::test::kSharded;

std::string layer_of(const std::string& weight_name) { return weight_name.substr(0, weight_name.size() - 7); }

ordered_json parse_ordered(const fs::path& path) { return ordered_json::parse(read_file(path)); }

// A copy of the sharded fixture in dir/name, to be broken by the caller.
fs::path copy_of_fixture(const TempDir& dir, const std::string& name) {
  const fs::path copy = dir.path() / name;
  fs::copy(kSharded, copy, fs::copy_options::recursive);
  return copy;
}

void rewrite_weight_map(const fs::path& folder, const std::function<void(ordered_json&)>& change) {
  ordered_json index = parse_ordered(folder / "model.safetensors.index.json");
  change(index["weight_map"]);
  write_file(folder / "model.safetensors.index.json", index.dump(2) + "\n");
}

// Quantizes a broken copy into dir/out and checks that it fails with one
// error line holding every expected piece, and leaves nothing in dir but
// the broken copy.
void check_rejected(const TempDir& dir, const fs::path& broken, const std::vector<std::string>& pieces) {
  const std::set<std::string> before = folder_entries(dir.path());
  const auto result = run_rtnq("quantize " + shell_quote(broken.string()) + " -o " + shell_quote(dir / "out"));
  CAPTURE(result.err);
  CHECK(result.exit_status == 1);
  CHECK(is_one_error_line(result.err));
  for (const std::string& piece : pieces) {
    CAPTURE(piece);
    CHECK(result.err.find(piece) != std::string::npos);
  }
  CHECK(folder_entries(dir.path()) == before);
}

}  // namespace

TEST_CASE("sharded folder quantizes shard by shard") {
  TempDir dir;
  const fs::path output = dir.path() / "out";
  const auto result =
      run_rtnq("quantize " + shell_quote(kSharded.string()) + " -o " + shell_quote(output.string()) + " --quiet");
  CAPTURE(result.err);
  REQUIRE(result.exit_status == 0);
  CHECK(folder_entries(dir.path()) == std::set<std::string>{"out"});
  CHECK(folder_entries(output) == std::set<std::string>{"README.md", "config.json", "model.safetensors.index.json",
                                                        "quantization_report.json", "tokenizer.json", kShards[0],
                                                        kShards[1], kShards[2]});

  // Which output shard each tensor should be in, from the input shards alone:
  // a quantized layer's three tensors take the place of its weight.
  std::map<std::string, std::string> expected_shard;
  for (const std::string& shard : kShards) {
    const SafetensorsFile input((kSharded / shard).string());
    for (const TensorInfo& tensor : input.tensors()) {
      if (is_quantized_weight(tensor)) {
        const std::string layer = layer_of(tensor.name);
        for (const char* suffix : {".quantized_weight", ".scale", ".zero"}) expected_shard[layer + suffix] = shard;
      } else {
        expected_shard[tensor.name] = shard;
      }
    }
  }
  REQUIRE(expected_shard.size() == 23 + 2 * 14);

  // What the output shards' own headers hold.
  std::map<std::string, std::string> actual_shard;
  uint64_t tensor_bytes = 0;
  size_t tensor_count = 0;
  for (const std::string& shard : kShards) {
    const SafetensorsFile file((output / shard).string());
    for (const TensorInfo& tensor : file.tensors()) {
      actual_shard[tensor.name] = shard;
      tensor_bytes += tensor.byte_size();
      tensor_count += 1;
    }
  }
  CHECK(tensor_count == actual_shard.size());  // no name in two shards
  CHECK(actual_shard == expected_shard);

  // The index names each tensor once, in the shard whose header has it.
  const json index = json::parse(read_file(output / "model.safetensors.index.json"));
  std::map<std::string, std::string> indexed_shard;
  for (const auto& item : index["weight_map"].items()) indexed_shard[item.key()] = item.value().get<std::string>();
  CHECK(index["weight_map"].size() == actual_shard.size());
  CHECK(indexed_shard == actual_shard);
  CHECK(index["metadata"]["total_size"] == tensor_bytes);

  // The weight of layer 1's down_proj is in shard 2 and its bias in shard 3;
  // both stay where they were, and the bias is copied byte for byte.
  CHECK(indexed_shard.at("model.layers.1.mlp.down_proj.quantized_weight") == kShards[1]);
  CHECK(indexed_shard.at("model.layers.1.mlp.down_proj.bias") == kShards[2]);
  const SafetensorsFile input_third((kSharded / kShards[2]).string());
  const SafetensorsFile output_third((output / kShards[2]).string());
  const auto input_tensors = rtnq::test::tensors_by_name(input_third);
  const auto output_tensors = rtnq::test::tensors_by_name(output_third);
  const std::string bias = "model.layers.1.mlp.down_proj.bias";
  CHECK(rtnq::test::tensor_bytes(output_third, *output_tensors.at(bias)) ==
        rtnq::test::tensor_bytes(input_third, *input_tensors.at(bias)));

  // Files that are not tensors are copied byte for byte.
  CHECK(read_file(output / "tokenizer.json") == read_file(kSharded / "tokenizer.json"));
  CHECK(read_file(output / "README.md") == read_file(kSharded / "README.md"));

  // config.json: the input's keys in their order, plus quantization_config
  // equal to the one in every shard's metadata.
  ordered_json config = parse_ordered(output / "config.json");
  REQUIRE(config.contains("quantization_config"));
  const json quantization_config = json::parse(config["quantization_config"].dump());
  CHECK(quantization_config["quant_method"] == "rtn");
  CHECK(quantization_config["wbits"] == 4);
  for (const std::string& shard : kShards) {
    CAPTURE(shard);
    const SafetensorsFile file((output / shard).string());
    CHECK(json::parse(rtnq::test::metadata_value(file, "quantization_config")) == quantization_config);
  }
  config.erase("quantization_config");
  CHECK(config == parse_ordered(kSharded / "config.json"));

  // The input is untouched.
  CHECK(folder_entries(kSharded) == std::set<std::string>{"README.md", "config.json", "model.safetensors.index.json",
                                                          "tokenizer.json", kShards[0], kShards[1], kShards[2]});
}

TEST_CASE("shard listed in index but missing") {
  TempDir dir;
  const fs::path broken = copy_of_fixture(dir, "broken");
  fs::remove(broken / kShards[1]);
  check_rejected(dir, broken, {"model.safetensors.index.json", kShards[1], "missing"});
}

TEST_CASE("tensor in two shards") {
  // A fourth shard, listed in the index for a tensor of its own, also contains
  // the bias that shard 1 has.
  TempDir dir;
  const fs::path broken = copy_of_fixture(dir, "broken");
  rtnq::test::write_float_checkpoint(
      broken / "model-extra.safetensors",
      {{"extra.bias", rtnq::DType::F32, {4}, {0.5, 0.25, -0.5, 1.0}},
       {"model.layers.0.mlp.down_proj.bias", rtnq::DType::F32, {2}, {1.0, 2.0}}});
  rewrite_weight_map(broken, [](ordered_json& weight_map) { weight_map["extra.bias"] = "model-extra.safetensors"; });
  check_rejected(dir, broken, {"model.layers.0.mlp.down_proj.bias", kShards[0], "model-extra.safetensors"});
}

TEST_CASE("index names tensor its shard lacks") {
  TempDir dir;
  const fs::path broken = copy_of_fixture(dir, "broken");
  rewrite_weight_map(broken,
                     [](ordered_json& weight_map) { weight_map["model.layers.1.mlp.extra_proj.weight"] = kShards[2]; });
  check_rejected(dir, broken, {"model.safetensors.index.json", "model.layers.1.mlp.extra_proj.weight", kShards[2]});
}

TEST_CASE("index puts tensor in wrong shard") {
  TempDir dir;
  const fs::path broken = copy_of_fixture(dir, "broken");
  rewrite_weight_map(broken, [](ordered_json& weight_map) { weight_map["model.norm.weight"] = kShards[0]; });
  check_rejected(dir, broken, {"model.safetensors.index.json", "model.norm.weight", kShards[0], kShards[2]});
}

TEST_CASE("shard missing from index") {
  // A shard on disk contains a tensor the index does not list.
  TempDir dir;
  const fs::path broken = copy_of_fixture(dir, "broken");
  rewrite_weight_map(broken, [](ordered_json& weight_map) { weight_map.erase("model.norm.weight"); });
  check_rejected(dir, broken, {"model.safetensors.index.json", "model.norm.weight", kShards[2]});
}

TEST_CASE("folder without index takes every shard") {
  // Without model.safetensors.index.json every *.safetensors file is read,
  // and the output gets an index of its own.
  TempDir dir;
  const fs::path input = copy_of_fixture(dir, "input");
  fs::remove(input / "model.safetensors.index.json");
  const fs::path output = dir.path() / "out";
  const auto result =
      run_rtnq("quantize " + shell_quote(input.string()) + " -o " + shell_quote(output.string()) + " --quiet");
  CAPTURE(result.err);
  REQUIRE(result.exit_status == 0);
  const json index = json::parse(read_file(output / "model.safetensors.index.json"));
  CHECK(index["weight_map"].size() == 23 + 2 * 14);
  CHECK(index["weight_map"]["model.layers.1.mlp.down_proj.bias"] == kShards[2]);
  CHECK(index["weight_map"]["model.layers.1.mlp.down_proj.scale"] == kShards[1]);
}

TEST_CASE("failure in later shard leaves nothing") {
  // Shard 1 is written before shard 2's layer fails (its scales overflow
  // F16), so the partial output folder must be removed.
  TempDir dir;
  const fs::path input = dir.path() / "input";
  fs::create_directory(input);
  std::vector<double> huge = rtnq::test::test_values(32, 2, 1.0);
  for (double& value : huge) value *= 1e30;
  rtnq::test::write_float_checkpoint(input / "model-00001-of-00002.safetensors",
                                     {{"first.weight", rtnq::DType::F32, {4, 8}, rtnq::test::test_values(32, 1)}});
  rtnq::test::write_float_checkpoint(input / "model-00002-of-00002.safetensors",
                                     {{"second.weight", rtnq::DType::F32, {4, 8}, huge}});
  write_file(input / "model.safetensors.index.json",
             R"({"metadata": {}, "weight_map": {"first.weight": "model-00001-of-00002.safetensors",)"
             R"( "second.weight": "model-00002-of-00002.safetensors"}})");
  write_file(input / "config.json", R"({"model_type": "llama"})");

  const fs::path output_root = dir.path() / "outputs";
  fs::create_directory(output_root);
  const auto result = run_rtnq("quantize " + shell_quote(input.string()) + " -o " +
                               shell_quote((output_root / "out").string()) + " --quiet");
  CAPTURE(result.err);
  CHECK(result.exit_status == 1);
  CHECK(is_one_error_line(result.err));
  CHECK(result.err.find("second") != std::string::npos);
  CHECK(result.err.find("--scale-dtype f32") != std::string::npos);
  CHECK(folder_entries(output_root).empty());

  // With F32 scales the same folder quantizes.
  const auto retry = run_rtnq("quantize " + shell_quote(input.string()) + " -o " +
                              shell_quote((output_root / "out").string()) + " --scale-dtype f32 --quiet");
  CAPTURE(retry.err);
  CHECK(retry.exit_status == 0);
  CHECK(folder_entries(output_root) == std::set<std::string>{"out"});
}

TEST_CASE("index with empty weight_map") {
  TempDir dir;
  const fs::path broken = copy_of_fixture(dir, "broken");
  rewrite_weight_map(broken, [](ordered_json& weight_map) { weight_map = ordered_json::object(); });
  check_rejected(dir, broken, {"model.safetensors.index.json", "weight_map lists no tensors"});
}

TEST_CASE("index or config not valid JSON") {
  for (const std::string file_name : {"model.safetensors.index.json", "config.json"}) {
    CAPTURE(file_name);
    TempDir dir;
    const fs::path broken = copy_of_fixture(dir, "broken");
    write_file(broken / file_name, "{\"weight_map\": ab}");
    check_rejected(dir, broken, {(broken / file_name).string() + ": not valid JSON: ", "line 1, column 16"});

    const auto result = run_rtnq("quantize " + shell_quote(broken.string()) + " -o " + shell_quote(dir / "out"));
    CHECK(result.err.find("[json.exception") == std::string::npos);
  }
}
