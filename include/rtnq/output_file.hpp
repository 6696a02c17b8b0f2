// Output files that appear under their final name only when complete.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace rtnq {

// Marker in the names of temporary files and folders; a leftover one (after a
// crash or SIGKILL) is recognisable by it and removed by the next run.
constexpr const char* kPartialMarker = ".rtnq-partial-";

// The temporary name beside final_path for this process: "DIR/.NAME.rtnq-partial-PID".
std::string partial_path_for(const std::string& final_path);

// Removes leftover partial files or folders of final_path whose process no longer runs.
void remove_stale_partials(const std::string& final_path);

// A file written under a temporary name in the destination folder and renamed
// into place by commit(). Destroying it uncommitted removes the temporary file.
class AtomicOutputFile {
 public:
  // Removes stale partials of final_path and creates the temporary file.
  // With overwrite false, fails if final_path exists.
  AtomicOutputFile(const std::string& final_path, bool overwrite);
  ~AtomicOutputFile();
  AtomicOutputFile(const AtomicOutputFile&) = delete;
  AtomicOutputFile& operator=(const AtomicOutputFile&) = delete;

  // Writes all bytes at offset; throws Error naming the file (disk full, ...).
  void write_at(const void* bytes, uint64_t length, uint64_t offset);
  // Copies length bytes from in_fd at in_offset to offset, inside the kernel
  // where possible. Holes of a sparse input are skipped and stay holes, so
  // the output range must not have been written before.
  void copy_from(int in_fd, uint64_t in_offset, uint64_t length, uint64_t offset);
  // Sets the final size (fills a file whose last bytes were never written).
  void resize(uint64_t length);
  // Flushes and renames into place. With overwrite false, an existing final
  // file (made by someone else meanwhile) is not replaced.
  void commit();

  const std::string& final_path() const { return final_path_; }
  const std::string& partial_path() const { return partial_path_; }

 private:
  // Ranges shorter than this are left to the kernel's own writeback.
  static constexpr uint64_t kWritebackMinBytes = 64 << 10;

  void start_writeback(uint64_t offset, uint64_t length);
  // Copies every byte of the range, holes included.
  void copy_range(int in_fd, uint64_t in_offset, uint64_t length, uint64_t offset);
  // Grows the file to length bytes if it is shorter.
  void extend_to(uint64_t length);

  std::string final_path_;
  std::string partial_path_;
  bool overwrite_ = false;
  int fd_ = -1;
  bool committed_ = false;
};

}  // namespace rtnq
