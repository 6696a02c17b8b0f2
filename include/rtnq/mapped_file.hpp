// Read-only memory mapping of a whole file.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace rtnq {

class MappedFile {
 public:
  // Maps path read-only; throws Error naming the path if it cannot be opened.
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::byte* data() const { return data_; }
  uint64_t size() const { return size_; }
  const std::string& path() const { return path_; }
  int fd() const { return fd_; }

  // Tells the kernel that the pages of [offset, offset + length) are not
  // needed any more, so they stop counting as resident memory of the process.
  // The mapping stays valid: a later read faults the pages in again.
  void release(uint64_t offset, uint64_t length) const;

  // Asks the kernel to read [offset, offset + length) ahead of use.
  void prefetch(uint64_t offset, uint64_t length) const;

 private:
  std::string path_;
  int fd_ = -1;
  const std::byte* data_ = nullptr;
  uint64_t size_ = 0;
};

}  // namespace rtnq
