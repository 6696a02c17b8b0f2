// Text views of JSON reports: one run as a table, or two runs side by side.
// The lines fit a terminal of 100 columns; measured numbers are printed in
// scientific notation with 3 significant digits ("%.2e").
#pragma once

#include <cstddef>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

namespace rtnq {

enum class ReportSort {
  error,  // largest relative error first: the output error if the report has one, else the weight error
  name,   // natural name order, as in the report
  time,   // largest quantization_time first
};

struct ReportViewOptions {
  size_t top = 0;  // rows to show; 0 shows every layer
  ReportSort sort = ReportSort::error;
};

// Width of the terminal the views are made for, in characters.
constexpr size_t kReportViewColumns = 100;

// Reads a report written by rtnq quantize. Throws Error naming the path if
// it cannot be read, is not JSON, or lacks the tool, parameters, layers or
// summary of an rtnq report.
nlohmann::ordered_json read_report_file(const std::string& path);

// "1.23e-02" for a value, "-" for none.
std::string format_scientific(const std::optional<double>& value);

// The layers table and the summary of one report.
std::string format_report(const nlohmann::ordered_json& report, const ReportViewOptions& options);

// Two reports side by side: per layer (matched by name) the relative errors
// of A and B and their ratio B/A, then the two summaries. With
// ReportSort::error the rows are ordered by A's error.
std::string format_report_comparison(const nlohmann::ordered_json& first, const nlohmann::ordered_json& second,
                                     const ReportViewOptions& options);

// One "field<TAB>value" line per scalar of the report's summary, in report
// order, for scripts: integers as they are, other numbers as "%.2e", null
// as "-". Lists such as worst_layers are left out.
std::string format_summary_fields(const nlohmann::ordered_json& report);

}  // namespace rtnq
