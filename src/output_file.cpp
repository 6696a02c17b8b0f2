#include "rtnq/output_file.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <vector>

#include "rtnq/error.hpp"

namespace rtnq {

std::string partial_path_for(const std::string& final_path) {
  std::filesystem::path path(final_path);
  std::string name = "." + path.filename().string() + kPartialMarker + std::to_string(::getpid());
  return (path.parent_path() / name).string();
}

void remove_stale_partials(const std::string& final_path) {
  std::filesystem::path path(final_path);
  std::filesystem::path folder = path.parent_path().empty() ? std::filesystem::path(".") : path.parent_path();
  const std::string prefix = "." + path.filename().string() + kPartialMarker;
  std::error_code ignored;
  for (const auto& entry : std::filesystem::directory_iterator(folder, ignored)) {
    const std::string name = entry.path().filename().string();
    if (name.compare(0, prefix.size(), prefix) != 0) continue;
    const std::string pid_text = name.substr(prefix.size());
    if (pid_text.empty() || pid_text.find_first_not_of("0123456789") != std::string::npos) continue;
    const long pid = std::stol(pid_text);
    if (pid > 0 && pid != ::getpid() && ::kill(static_cast<pid_t>(pid), 0) == 0) continue;  // still running
    std::filesystem::remove_all(entry.path(), ignored);
  }
}

AtomicOutputFile::AtomicOutputFile(const std::string& final_path, bool overwrite)
    : final_path_(final_path), partial_path_(partial_path_for(final_path)), overwrite_(overwrite) {
  if (!overwrite && std::filesystem::exists(std::filesystem::symlink_status(final_path))) {
    throw Error(final_path + ": output already exists; pass --force to replace it");
  }
  // Also covers files that no OutputTarget cleans up for, such as a report
  // beside a file output.
  remove_stale_partials(final_path);
  fd_ = ::open(partial_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) {
    const int open_errno = errno;
    std::string message = final_path + ": cannot create file: " + std::strerror(open_errno);
    const std::filesystem::path folder = std::filesystem::path(final_path).parent_path();
    std::error_code ignored;
    if (open_errno == ENOENT && !folder.empty() && !std::filesystem::exists(folder, ignored)) {
      message += " (folder " + folder.string() + " does not exist)";
    }
    throw Error(message);
  }
}

AtomicOutputFile::~AtomicOutputFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(partial_path_.c_str());
}

// Asks the kernel to start writing the range to disk now, without waiting.
// commit() has to fsync before the rename, and data whose writeback started
// while later layers were quantized is on disk by then, so the fsync waits
// less. A failure here only loses that head start: fsync reports any error.
void AtomicOutputFile::start_writeback(uint64_t offset, uint64_t length) {
  if (length >= kWritebackMinBytes) {
    ::sync_file_range(fd_, static_cast<off64_t>(offset), static_cast<off64_t>(length), SYNC_FILE_RANGE_WRITE);
  }
}

void AtomicOutputFile::write_at(const void* bytes, uint64_t length, uint64_t offset) {
  const uint64_t first_byte = offset;
  const uint64_t byte_count = length;
  const char* cursor = static_cast<const char*>(bytes);
  while (length > 0) {
    const size_t chunk = static_cast<size_t>(std::min<uint64_t>(length, 1u << 30));
    const ssize_t written = ::pwrite(fd_, cursor, chunk, static_cast<off_t>(offset));
    if (written < 0) {
      if (errno == EINTR) continue;
      throw Error(final_path_ + ": write failed at byte " + std::to_string(offset) + ": " + std::strerror(errno));
    }
    if (written == 0) throw Error(final_path_ + ": write failed at byte " + std::to_string(offset));
    cursor += written;
    offset += static_cast<uint64_t>(written);
    length -= static_cast<uint64_t>(written);
  }
  start_writeback(first_byte, byte_count);
}

void AtomicOutputFile::copy_from(int in_fd, uint64_t in_offset, uint64_t length, uint64_t offset) {
  // Only the data extents of a sparse input are copied. The partial file is
  // new, so the ranges skipped over stay holes there too and read as zeros.
  const uint64_t in_end = in_offset + length;
  uint64_t position = in_offset;
  while (position < in_end) {
    const off_t data = ::lseek(in_fd, static_cast<off_t>(position), SEEK_DATA);
    if (data < 0 && errno == ENXIO) break;  // nothing but a hole up to the end of the input
    if (data < 0) {
      // The file system cannot report holes: copy everything that is left.
      copy_range(in_fd, position, in_end - position, offset + (position - in_offset));
      break;
    }
    const uint64_t data_begin = static_cast<uint64_t>(data);
    if (data_begin >= in_end) break;
    const off_t hole = ::lseek(in_fd, data, SEEK_HOLE);
    const uint64_t data_end = hole < 0 ? in_end : std::min(static_cast<uint64_t>(hole), in_end);
    copy_range(in_fd, data_begin, data_end - data_begin, offset + (data_begin - in_offset));
    position = data_end;
  }
  extend_to(offset + length);  // a hole at the end of the range was never written
}

void AtomicOutputFile::extend_to(uint64_t length) {
  struct stat status {};
  if (::fstat(fd_, &status) != 0) {
    throw Error(final_path_ + ": cannot read the size of the partial output: " + std::strerror(errno));
  }
  if (static_cast<uint64_t>(status.st_size) < length) resize(length);
}

void AtomicOutputFile::copy_range(int in_fd, uint64_t in_offset, uint64_t length, uint64_t offset) {
  auto in_position = static_cast<off64_t>(in_offset);
  auto out_position = static_cast<off64_t>(offset);
  while (length > 0) {
    const ssize_t copied = ::copy_file_range(in_fd, &in_position, fd_, &out_position,
                                             static_cast<size_t>(std::min<uint64_t>(length, 1u << 30)), 0);
    if (copied > 0) {
      start_writeback(static_cast<uint64_t>(out_position - copied), static_cast<uint64_t>(copied));
      length -= static_cast<uint64_t>(copied);
      continue;
    }
    if (copied < 0 && errno == EINTR) continue;
    if (copied < 0 && errno != EXDEV && errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP) {
      throw Error(final_path_ + ": write failed at byte " + std::to_string(out_position) + ": " + std::strerror(errno));
    }
    // The kernel cannot copy between these files: go through a buffer.
    std::vector<char> buffer(static_cast<size_t>(std::min<uint64_t>(length, 8u << 20)));
    while (length > 0) {
      const size_t chunk = static_cast<size_t>(std::min<uint64_t>(length, buffer.size()));
      const ssize_t got = ::pread(in_fd, buffer.data(), chunk, in_position);
      if (got < 0 && errno == EINTR) continue;
      if (got < 0) throw Error(final_path_ + ": reading the input failed: " + std::strerror(errno));
      if (got == 0) throw Error(final_path_ + ": the input ended early; was it truncated during the run?");
      write_at(buffer.data(), static_cast<uint64_t>(got), static_cast<uint64_t>(out_position));
      in_position += got;
      out_position += got;
      length -= static_cast<uint64_t>(got);
    }
  }
}

void AtomicOutputFile::resize(uint64_t length) {
  if (::ftruncate(fd_, static_cast<off_t>(length)) != 0) {
    throw Error(final_path_ + ": cannot set the size to " + std::to_string(length) + " bytes: " + std::strerror(errno));
  }
}

void AtomicOutputFile::commit() {
  if (::fsync(fd_) != 0) throw Error(final_path_ + ": flushing to disk failed: " + std::strerror(errno));
  if (::close(fd_) != 0) {
    fd_ = -1;
    throw Error(final_path_ + ": closing failed: " + std::strerror(errno));
  }
  fd_ = -1;
  if (!overwrite_) {
    // link() fails if the name exists, so nothing made meanwhile is replaced.
    if (::link(partial_path_.c_str(), final_path_.c_str()) != 0) {
      throw Error(final_path_ + ": cannot create output: " + std::strerror(errno));
    }
    ::unlink(partial_path_.c_str());
  } else if (::rename(partial_path_.c_str(), final_path_.c_str()) != 0) {
    throw Error(final_path_ + ": cannot rename the finished output into place: " + std::strerror(errno));
  }
  committed_ = true;
}

}  // namespace rtnq
