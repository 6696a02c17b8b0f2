#include "rtnq/mapped_file.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "rtnq/error.hpp"

namespace rtnq {
namespace {

uint64_t page_size() {
  static const uint64_t size = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  return size;
}

}  // namespace

MappedFile::MappedFile(const std::string& path) : path_(path) {
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) throw Error(path + ": cannot open: " + std::strerror(errno));
  struct stat info {};
  if (::fstat(fd_, &info) != 0) {
    int saved = errno;
    ::close(fd_);
    throw Error(path + ": cannot stat: " + std::strerror(saved));
  }
  if (!S_ISREG(info.st_mode)) {
    ::close(fd_);
    throw Error(path + ": not a regular file");
  }
  size_ = static_cast<uint64_t>(info.st_size);
  if (size_ == 0) return;  // mmap rejects length 0; an empty file has no data to map
  void* mapping = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd_, 0);
  if (mapping == MAP_FAILED) {
    int saved = errno;
    ::close(fd_);
    throw Error(path + ": cannot map " + std::to_string(size_) + " bytes: " + std::strerror(saved));
  }
  data_ = static_cast<const std::byte*>(mapping);
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(const_cast<std::byte*>(data_), size_);
  if (fd_ >= 0) ::close(fd_);
}

void MappedFile::release(uint64_t offset, uint64_t length) const {
  if (!data_ || length == 0 || offset >= size_) return;
  // Only whole pages inside the range, so a neighbour's data is not dropped early.
  const uint64_t begin = (offset + page_size() - 1) / page_size() * page_size();
  const uint64_t end = std::min(offset + length, size_) / page_size() * page_size();
  if (end <= begin) return;
  ::madvise(const_cast<std::byte*>(data_) + begin, end - begin, MADV_DONTNEED);
}

void MappedFile::prefetch(uint64_t offset, uint64_t length) const {
  if (!data_ || length == 0 || offset >= size_) return;
  const uint64_t begin = offset / page_size() * page_size();
  const uint64_t end = std::min(offset + length, size_);
  ::madvise(const_cast<std::byte*>(data_) + begin, end - begin, MADV_WILLNEED);
}

}  // namespace rtnq
