#include "lm/single_thread_scope.h"

#include <dlfcn.h>

#include <ATen/Parallel.h>

namespace encodec::lm {
namespace {

// LibTorch's OpenMP runtime, looked up in the process (LibTorch loads it) rather
// than linked: the project does not build with -fopenmp.
struct OpenMp {
  int (*get_max_threads)() = nullptr;
  void (*set_num_threads)(int) = nullptr;
  OpenMp() {
    get_max_threads = reinterpret_cast<int (*)()>(dlsym(RTLD_DEFAULT, "omp_get_max_threads"));
    set_num_threads = reinterpret_cast<void (*)(int)>(dlsym(RTLD_DEFAULT, "omp_set_num_threads"));
    if (!get_max_threads || !set_num_threads) get_max_threads = nullptr;
  }
};

const OpenMp& open_mp() {
  static const OpenMp instance;
  return instance;
}

}  // namespace

SingleThreadScope::SingleThreadScope() {
  // LibTorch sets a thread's OpenMP thread count the first time the thread runs
  // a parallel operation: make that happen now, not inside the scope.
  at::get_num_threads();
  const OpenMp& omp = open_mp();
  if (!omp.get_max_threads) return;
  saved_threads_ = omp.get_max_threads();
  if (saved_threads_ != 1) omp.set_num_threads(1);
}

SingleThreadScope::~SingleThreadScope() {
  const OpenMp& omp = open_mp();
  if (omp.get_max_threads && saved_threads_ > 1) omp.set_num_threads(saved_threads_);
}

}  // namespace encodec::lm
