#include "rtnq/quantize.hpp"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <numeric>
#include <set>

#include "rtnq/error.hpp"
#include "rtnq/output_error.hpp"
#include "rtnq/output_file.hpp"
#include "rtnq/output_folder.hpp"
#include "rtnq/rtn_kernel.hpp"

namespace rtnq {
namespace fs = std::filesystem;
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Code, scale and zero buffers, reused from layer to layer.
struct LayerBuffers {
  std::vector<std::byte> codes;
  std::vector<std::byte> scales;
  std::vector<std::byte> zeros;
};

// Quantizes one layer into buffers; throws Error naming the layer for
// non-finite weights or scales that overflow the scale dtype. rows_done
// (optional) gets each block of finished code rows, from the kernel's threads.
LayerResult quantize_layer(const LayerPlan& layer, const FormatOptions& options, LayerBuffers& buffers,
                           int threads, const std::function<void(int64_t, int64_t)>& rows_done = {}) {
  const TensorInfo& info = *layer.source->info;
  const RtnParams& params = options.params;
  const uint64_t parameter_count = uint64_t(layer.out_features) * uint64_t(layer.n_groups);
  buffers.codes.resize(info.element_count() * uint64_t(dtype_bits(code_dtype_for_bits(params.wbits)) / 8));
  buffers.scales.resize(parameter_count * uint64_t(dtype_bits(options.scale_dtype) / 8));
  buffers.zeros.resize(parameter_count * uint64_t(dtype_bits(zero_dtype_for_bits(params.wbits)) / 8));

  WeightMatrix weight;
  weight.data = layer.source->file->tensor_data(info);
  weight.dtype = info.dtype;
  weight.out_features = layer.out_features;
  weight.in_features = layer.in_features;
  weight.conv1d = layer.conv1d;
  QuantizedBuffers out;
  out.codes = buffers.codes.data();
  out.stored_scales = buffers.scales.data();
  out.scale_dtype = options.scale_dtype;
  out.stored_zeros = buffers.zeros.data();
  out.rows_done = rows_done;

  const Clock::time_point start = Clock::now();
  const KernelResult kernel = quantize_matrix(weight, params, out, threads);
  LayerResult result;
  result.seconds = seconds_since(start);
  result.weight_error = kernel.weight_error;

  if (kernel.nonfinite_count > 0) {
    throw Error(layer.layer + ": " + std::to_string(kernel.nonfinite_count) +
                " weights are NaN or infinite, the first at row " + std::to_string(kernel.first_nonfinite_row) +
                ", column " + std::to_string(kernel.first_nonfinite_column) + " of " + info.name +
                "; such a layer cannot be quantized");
  }
  if (kernel.overflowed_scale_count > 0) {
    // Only weights near the float32 limit overflow an F32 scale, and no
    // stored dtype can represent their scale.
    const std::string advice = options.scale_dtype == DType::F32
                                   ? "; the weights are too close to the float32 limit to be quantized"
                                   : "; pass --scale-dtype f32";
    throw Error(layer.layer + ": " + std::to_string(kernel.overflowed_scale_count) + " scales overflow " +
                std::string(dtype_name(options.scale_dtype)) + advice);
  }
  return result;
}

// The input position of an output tensor, so that the input is read in order.
uint64_t input_position(const OutputTensorPlan& source, const QuantizationPlan& plan) {
  if (source.source == TensorSource::copy) return source.input->info->begin;
  return plan.layers[source.layer_index].source->info->begin;
}

void write_text_file(AtomicOutputFile& file, const std::string& text) {
  file.write_at(text.data(), text.size(), 0);
  file.resize(text.size());
}

// Copies the folder's other files (config, tokenizer, ...) and writes the
// rewritten index and config.json into the partial output folder.
void write_folder_files(const Checkpoint& checkpoint, const QuantizationPlan& plan, const OutputTarget& target,
                        std::vector<std::unique_ptr<AtomicOutputFile>>& files) {
  std::vector<std::string> excluded = {kShardIndexName, kConfigName};
  std::vector<ShardContents> shards;
  for (const OutputFilePlan& file : plan.files) {
    excluded.push_back(file.file_name);
    shards.push_back({file.file_name, &file.layout});
  }
  copy_other_files(checkpoint.path(), target.partial_folder(), excluded);

  if (checkpoint.config()) {
    const std::string config_path = (fs::path(checkpoint.path()) / kConfigName).string();
    files.push_back(std::make_unique<AtomicOutputFile>(target.path_of(kConfigName), true));
    write_text_file(*files.back(), rewritten_config_text(config_path, plan.quantization_config));
  }

  if (checkpoint.index() || plan.files.size() > 1) {
    const nlohmann::json* input_index = checkpoint.index() ? &*checkpoint.index() : nullptr;
    files.push_back(std::make_unique<AtomicOutputFile>(target.path_of(kShardIndexName), true));
    write_text_file(*files.back(), shard_index_text(input_index, shards));
  }
}

}  // namespace

std::string default_report_path(const std::string& output, bool directory_output) {
  if (directory_output) return (fs::path(output) / "quantization_report.json").string();
  return output + ".report.json";
}

namespace {

// True if path is folder or lies below it. Both must be canonical.
bool is_same_or_inside(const fs::path& path, const fs::path& folder) {
  auto path_part = path.begin();
  for (const fs::path& folder_part : folder) {
    if (path_part == path.end() || *path_part != folder_part) return false;
    ++path_part;
  }
  return true;
}

// Throws Error unless every entry of the existing folder output has a name
// that a new output of checkpoint also has: the input folder's file names and
// the report. --force replaces the whole folder, so this keeps it from
// deleting files that no rtnq run of this input put there.
void check_replaceable_folder(const Checkpoint& checkpoint, const std::string& output) {
  std::set<std::string> output_names = {"quantization_report.json"};
  for (const auto& entry : fs::directory_iterator(checkpoint.path())) output_names.insert(entry.path().filename());
  for (const auto& entry : fs::directory_iterator(output)) {
    const std::string name = entry.path().filename();
    if (output_names.count(name) == 0) {
      throw Error(output + ": --force would delete " + name +
                  ", which is not part of this input's output; remove it yourself or choose another output folder");
    }
  }
}

}  // namespace

void check_output_path(const Checkpoint& checkpoint, const std::string& output, bool overwrite) {
  std::error_code error;
  const fs::path input_path = fs::weakly_canonical(checkpoint.path(), error);
  const fs::path output_path = fs::weakly_canonical(output, error);
  if (output.empty()) throw Error("no output path given");
  if (output_path == input_path) throw Error(output + ": output is the input; choose another output path");
  for (const auto& file : checkpoint.files()) {
    if (fs::exists(output) && fs::equivalent(file->path(), output, error)) {
      throw Error(output + ": output is the input file " + file->path() + " under another name");
    }
  }
  if (checkpoint.is_directory() && is_same_or_inside(output_path, input_path)) {
    throw Error(output + ": output is inside the input folder " + checkpoint.path());
  }

  // With --force an existing output is removed, so an output folder that
  // contains an input file would delete the input.
  for (const auto& file : checkpoint.files()) {
    if (is_same_or_inside(fs::weakly_canonical(file->path(), error), output_path)) {
      throw Error(output + ": output contains the input " + checkpoint.path() + "; choose another output path");
    }
  }

  const fs::file_status status = fs::symlink_status(output, error);
  if (fs::exists(status)) {
    if (checkpoint.is_directory() && !fs::is_directory(status)) {
      throw Error(output + ": exists and is not a folder; the input is a folder, so the output is one too");
    }
    if (!checkpoint.is_directory() && fs::is_directory(status)) {
      throw Error(output + ": is a folder; the input is a file, so give the output file's name");
    }
    if (!overwrite) throw Error(output + ": output already exists; pass --force to replace it");
    if (checkpoint.is_directory()) check_replaceable_folder(checkpoint, output);
  }

  const fs::path parent = output_path.parent_path();
  if (!parent.empty() && !fs::is_directory(parent, error)) {
    if (fs::exists(parent, error)) throw Error(output + ": " + parent.string() + " is not a folder");
    throw Error(output + ": the folder " + parent.string() + " does not exist");
  }
}

void check_report_path(const Checkpoint& checkpoint, const std::string& report, const std::string& output,
                       bool overwrite) {
  std::error_code error;
  const fs::path report_path = fs::weakly_canonical(report, error);
  for (const auto& file : checkpoint.files()) {
    const bool same_file = fs::exists(report) && fs::equivalent(file->path(), report, error);
    if (same_file || report_path == fs::weakly_canonical(file->path(), error)) {
      throw Error(report + ": report is the input file " + file->path() + "; choose another report path");
    }
  }
  if (checkpoint.is_directory() && is_same_or_inside(report_path, fs::weakly_canonical(checkpoint.path(), error))) {
    throw Error(report + ": report is inside the input folder " + checkpoint.path());
  }
  if (report_path == fs::weakly_canonical(output, error)) {
    throw Error(report + ": report would replace the output; choose another report path");
  }
  const fs::file_status status = fs::symlink_status(report, error);
  if (fs::is_directory(status)) throw Error(report + ": report path is a folder; give the report file's name");
  // A report inside a folder output is written after the folder is made.
  const fs::path parent = report_path.parent_path();
  if (!parent.empty() && parent != fs::weakly_canonical(output, error) && !fs::is_directory(parent, error)) {
    throw Error(report + ": cannot write the report, the folder " + parent.string() + " does not exist");
  }
  if (!overwrite && fs::exists(status)) throw Error(report + ": report already exists; pass --force to replace it");
}

void check_quantize_outputs(const Checkpoint& checkpoint, const QuantizeOptions& options) {
  check_output_path(checkpoint, options.output, options.overwrite);
  const bool directory = checkpoint.is_directory();
  // The default report of a folder output is written inside the new folder,
  // which replaces the old one only with overwrite anyway.
  const bool report_inside = directory && options.report_path.empty();
  const std::string report =
      options.report_path.empty() ? default_report_path(options.output, directory) : options.report_path;
  check_report_path(checkpoint, report, options.output, report_inside || options.overwrite);
}

QuantizeOutcome quantize_checkpoint(const Checkpoint& checkpoint, const QuantizationPlan& plan,
                                    const QuantizeOptions& options, const ProgressCallback& progress) {
  const Clock::time_point start = Clock::now();
  check_quantize_outputs(checkpoint, options);
  const bool directory = checkpoint.is_directory();

  QuantizeOutcome outcome;
  outcome.output_path = options.output;
  outcome.report_path =
      options.report_path.empty() ? default_report_path(options.output, directory) : options.report_path;
  const bool report_inside = directory && options.report_path.empty();
  outcome.layers.resize(plan.layers.size());

  // Activations are checked against every layer before any output exists.
  std::optional<ActivationSet> activations;
  if (!options.activations_path.empty()) {
    activations.emplace(options.activations_path);
    activations->check_layers(plan.layers);
  }

  OutputTarget target(options.output, directory, options.overwrite);
  std::vector<std::unique_ptr<AtomicOutputFile>> files;
  LayerBuffers buffers;
  ProgressEvent event;
  event.layers_total = plan.layers.size();
  event.bytes_total = plan.input_bytes;

  for (const OutputFilePlan& file_plan : plan.files) {
    files.push_back(std::make_unique<AtomicOutputFile>(target.path_of(file_plan.file_name), target.overwrite_files()));
    AtomicOutputFile& out = *files.back();
    const SafetensorsFile& input = *file_plan.input_file;
    out.write_at(file_plan.layout.header.data(), file_plan.layout.header.size(), 0);
    event.bytes_done += input.data_offset();

    // Visit output tensors in input order, so the input is read front to back.
    std::vector<size_t> order(file_plan.sources.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      return input_position(file_plan.sources[a], plan) < input_position(file_plan.sources[b], plan);
    });
    std::vector<uint64_t> layer_offsets(3);
    for (size_t k : order) {
      const OutputTensorPlan& source = file_plan.sources[k];
      const uint64_t offset = file_plan.layout.file_offsets[k];
      if (source.source == TensorSource::copy) {
        const TensorInfo& info = *source.input->info;
        out.copy_from(input.mapping().fd(), input.data_offset() + info.begin, info.byte_size(), offset);
        event.bytes_done += info.byte_size();
        continue;
      }
      if (source.source != TensorSource::codes) continue;  // scales and zeros are written with the codes

      const LayerPlan& layer = plan.layers[source.layer_index];
      LayerResult& result = outcome.layers[source.layer_index];
      // Code rows are written by the kernel's threads as they finish, so the
      // writing overlaps the quantization and keeps both cores busy.
      const uint64_t code_row_bytes =
          uint64_t(layer.in_features) * uint64_t(dtype_bits(code_dtype_for_bits(options.format.params.wbits)) / 8);
      auto write_code_rows = [&](int64_t first_row, int64_t row_count) {
        const uint64_t first_byte = uint64_t(first_row) * code_row_bytes;
        out.write_at(buffers.codes.data() + first_byte, uint64_t(row_count) * code_row_bytes, offset + first_byte);
      };
      result = quantize_layer(layer, options.format, buffers, options.threads, write_code_rows);
      if (activations) {
        result.output_error = activations->output_error(layer, options.format, buffers.codes.data(),
                                                        buffers.scales.data(), buffers.zeros.data(), options.threads);
      }
      for (size_t j = 0; j < file_plan.sources.size(); ++j) {
        const OutputTensorPlan& other = file_plan.sources[j];
        if (other.source == TensorSource::copy || other.layer_index != source.layer_index) continue;
        if (other.source == TensorSource::codes) continue;  // written by write_code_rows
        const std::vector<std::byte>& bytes = other.source == TensorSource::scales ? buffers.scales : buffers.zeros;
        out.write_at(bytes.data(), bytes.size(), file_plan.layout.file_offsets[j]);
      }
      input.release(*layer.source->info);
      event.bytes_done += layer.source->info->byte_size();
      event.layers_done += 1;
      event.layer = &layer;
      event.result = &result;
      event.elapsed_seconds = seconds_since(start);
      if (progress) progress(event);
    }
    out.resize(file_plan.layout.file_bytes);
  }

  if (directory) write_folder_files(checkpoint, plan, target, files);

  RunDescription run;
  run.input_path = checkpoint.path();
  run.output_path = options.output;
  run.activations_path = options.activations_path;
  run.options = options.format;
  run.conv1d_keywords = effective_conv1d_keywords(checkpoint, options.format);
  run.threads = options.threads;
  run.wall_seconds = seconds_since(start);
  outcome.report = build_report(plan, outcome.layers, run);

  const std::string report_file = report_inside ? target.path_of("quantization_report.json") : outcome.report_path;
  auto report = std::make_unique<AtomicOutputFile>(report_file, report_inside || options.overwrite);
  write_text_file(*report, outcome.report.dump(2) + "\n");

  for (auto& file : files) file->commit();
  report->commit();
  target.commit();
  return outcome;
}

}  // namespace rtnq
