// Runs LibTorch's and OpenBLAS's operations on the calling thread alone while it
// lives. The reference probabilities are those of a one-thread run: several
// LibTorch kernels (the softmax over codebooks among them) split their work
// differently on more threads, which changes their vectorization and so the
// last bits of the results. Only the calling thread's OpenMP setting changes
// (it is per thread), so other threads keep theirs.
#pragma once

namespace encodec::lm {

class SingleThreadScope {
 public:
  SingleThreadScope();
  ~SingleThreadScope();
  SingleThreadScope(const SingleThreadScope&) = delete;
  SingleThreadScope& operator=(const SingleThreadScope&) = delete;

 private:
  int saved_threads_ = 0;
};

}  // namespace encodec::lm
