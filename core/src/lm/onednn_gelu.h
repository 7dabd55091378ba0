// F.gelu (the exact, erf form) on one row, as LibTorch 1.13 computes it on the
// CPU: through oneDNN's eltwise_gelu_erf primitive (its JIT kernel has its own
// erf, so only that kernel gives the reference's bits). LibTorch wraps each call
// in fresh tensors and oneDNN memory objects, hundreds of allocations a call;
// here the primitive and the memory objects over the caller's buffers are made
// once, so a call allocates nothing. The same system libdnnl that LibTorch runs.
//
// Thread safety: one object per thread (the LM stepper's).
#pragma once

#include <memory>

namespace encodec::lm {

class OneDnnGelu {
 public:
  // in/out: `size` floats each, owned by the caller and outliving this object.
  // Throws std::runtime_error naming the oneDNN call that failed.
  OneDnnGelu(const float* in, float* out, int size);
  ~OneDnnGelu();
  OneDnnGelu(const OneDnnGelu&) = delete;
  OneDnnGelu& operator=(const OneDnnGelu&) = delete;

  // out = gelu(in).
  void run();

 private:
  struct Handles;
  std::unique_ptr<Handles> handles_;
};

}  // namespace encodec::lm
