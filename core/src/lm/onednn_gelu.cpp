#include "lm/onednn_gelu.h"

#include <stdexcept>
#include <string>

#include <oneapi/dnnl/dnnl.h>

namespace encodec::lm {
namespace {

void check(dnnl_status_t status, const char* call) {
  if (status != dnnl_success) {
    throw std::runtime_error(std::string("oneDNN GELU: ") + call + " failed (status " +
                             std::to_string(static_cast<int>(status)) + ")");
  }
}

}  // namespace

struct OneDnnGelu::Handles {
  dnnl_engine_t engine = nullptr;
  dnnl_stream_t stream = nullptr;
  dnnl_primitive_desc_t descriptor = nullptr;
  dnnl_primitive_t primitive = nullptr;
  dnnl_memory_t source = nullptr;
  dnnl_memory_t destination = nullptr;
  dnnl_exec_arg_t arguments[2] = {};

  ~Handles() {
    if (destination) dnnl_memory_destroy(destination);
    if (source) dnnl_memory_destroy(source);
    if (primitive) dnnl_primitive_destroy(primitive);
    if (descriptor) dnnl_primitive_desc_destroy(descriptor);
    if (stream) dnnl_stream_destroy(stream);
    if (engine) dnnl_engine_destroy(engine);
  }
};

OneDnnGelu::OneDnnGelu(const float* in, float* out, int size) : handles_(std::make_unique<Handles>()) {
  Handles& h = *handles_;
  check(dnnl_engine_create(&h.engine, dnnl_cpu, 0), "dnnl_engine_create");
  check(dnnl_stream_create(&h.stream, h.engine, dnnl_stream_default_flags), "dnnl_stream_create");
  // LibTorch's call: a dense [1, 1, size] tensor, forward_training, alpha = beta = 0.
  const dnnl_dims_t dims = {1, 1, size};
  dnnl_memory_desc_t layout;
  check(dnnl_memory_desc_init_by_tag(&layout, 3, dims, dnnl_f32, dnnl_abc), "dnnl_memory_desc_init_by_tag");
  dnnl_eltwise_desc_t operation;
  check(dnnl_eltwise_forward_desc_init(&operation, dnnl_forward_training, dnnl_eltwise_gelu_erf, &layout,
                                       0.0f, 0.0f),
        "dnnl_eltwise_forward_desc_init");
  check(dnnl_primitive_desc_create(&h.descriptor, &operation, nullptr, h.engine, nullptr),
        "dnnl_primitive_desc_create");
  check(dnnl_primitive_create(&h.primitive, h.descriptor), "dnnl_primitive_create");
  // oneDNN reads the source through a non-const handle; it does not write it.
  check(dnnl_memory_create(&h.source, &layout, h.engine, const_cast<float*>(in)), "dnnl_memory_create");
  check(dnnl_memory_create(&h.destination, &layout, h.engine, out), "dnnl_memory_create");
  h.arguments[0] = {DNNL_ARG_SRC, h.source};
  h.arguments[1] = {DNNL_ARG_DST, h.destination};
}

OneDnnGelu::~OneDnnGelu() = default;

void OneDnnGelu::run() {
  Handles& h = *handles_;
  check(dnnl_primitive_execute(h.primitive, h.stream, 2, h.arguments), "dnnl_primitive_execute");
  check(dnnl_stream_wait(h.stream), "dnnl_stream_wait");
}

}  // namespace encodec::lm
