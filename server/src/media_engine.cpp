#include "media_engine.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <string>

#include <ATen/Parallel.h>
#include <spdlog/spdlog.h>

#include "encodec/net/codes_payload.h"

namespace encodec::server {

namespace {

// Decoded frames whose capture times are remembered, to stamp the frames
// made from them (a ring: enough for any start delay).
constexpr int kCaptureTimeRing = 64;
// Consecutive missing frames beyond this many are not concealed (a decoder's
// concealment is silent after 8 anyway): the stream goes on from the next frame.
constexpr int kMaxConcealedGap = 16;
// How far ahead of the next frame due a reorder window takes a frame; a frame
// further ahead (a long outage) restarts the window from it. The capture times
// of the frames in a window are kept by sequence in a ring of this size.
constexpr int kReorderCapacityFrames = 64;
static_assert((kReorderCapacityFrames & (kReorderCapacityFrames - 1)) == 0,
              "a power of two, so that sequence % size survives the uint32 wrap");

// A reorder window over one incoming stream: only next_in_order() is used, so
// the playout delay settings are minimal and the delay statistics window is
// small (insert() still updates it; nothing reads it).
std::unique_ptr<net::JitterBuffer> make_reorder_window(double frame_duration_us,
                                                       size_t max_payload_bytes, int reorder_frames) {
  net::JitterBufferOptions options;
  options.frame_duration_us = frame_duration_us;
  options.min_delay_frames = 0;
  options.max_delay_frames = 1;
  options.capacity_frames = kReorderCapacityFrames;
  options.max_payload_bytes = max_payload_bytes;
  options.delay_window_packets = 8;
  options.reorder_window_frames = reorder_frames;
  return std::make_unique<net::JitterBuffer>(options, net::steady_now_us);
}

// Whether a reorder window may hand out frames: at a stream's start it waits
// until the window is full (or the stream ended), so that the sender's start
// burst (the streaming encoder's first 7 frames leave together) is taken in
// order even when jitter swapped its first frames.
bool reorder_window_ready(const net::JitterBuffer& window, bool stream_ended) {
  return window.started() || stream_ended ||
         window.pending_frames() >= MediaEngine::kStartWindowFrames;
}

}  // namespace

struct MediaEngine::Control {
  enum class Kind { kOpenEncoder, kOpenOpusSender, kAddOpusReceiver, kRemoveSession } kind;
  uint64_t session = 0;     // encoder session, or sender
  uint64_t receiver = 0;
  uint32_t sender_stream_id = 0;
  std::shared_ptr<Peer> peer;
  double bandwidth_kbps = 0.0;
  int bitrate_bps = 0;
  int frame_samples = 0;
  // Applied once this many jobs have been taken: every job submitted before the
  // control (its count, like the jobs', is taken before the push).
  uint64_t after_jobs = 0;
};

// A room member's Opus packets on their way to the encoder.
struct MediaEngine::OpusInput {
  std::unique_ptr<net::OpusFrameDecoder> decoder;
  std::unique_ptr<net::JitterBuffer> reorder;
  uint64_t arrival_capture_us[kReorderCapacityFrames] = {};  // by sequence, while in the window
  bool started = false;          // a packet of this stream was accepted
  bool end_seen = false;         // its end_of_stream packet is in (maybe before earlier ones)
  int concealed_in_a_row = 0;
  int64_t frames_pushed = 0;     // Opus frames of audio pushed to the encoder
  uint64_t capture_times_us[kCaptureTimeRing] = {};  // by frame pushed
  std::vector<float> pcm;        // one frame
};

struct MediaEngine::Encoder {
  uint64_t session = 0;
  StreamBatcher::StreamId stream = 0;
  std::shared_ptr<Peer> peer;  // ROLE_ENCODE: where the codes go (an Opus sender's are forwarded)
  double bandwidth_kbps = 0.0;
  int64_t pending_samples = 0;  // pushed, not yet ticked
  uint32_t next_sequence = 0;
  bool ending = false;
  std::unique_ptr<OpusInput> opus;  // set for a member that sends Opus
};

struct MediaEngine::OpusReceiver {
  uint64_t session = 0;
  std::shared_ptr<Peer> peer;
  std::unique_ptr<net::OpusFrameEncoder> encoder;
  std::vector<float> pending;  // decoded samples not yet in an Opus frame (capacity reserved)
  int64_t pending_first_sample = 0;  // decoder output position of pending[0]
  uint32_t next_sequence = 0;
  int bitrate_bps = 0;
};

struct MediaEngine::Decoder {
  StreamBatcher::StreamId stream = 0;
  uint32_t sender_stream_id = 0;
  std::unique_ptr<net::JitterBuffer> reorder;  // the sender's code frames (int32 codes)
  uint64_t arrival_capture_us[kReorderCapacityFrames] = {};  // by sequence, while in the window
  bool started = false;   // a frame of this stream was accepted
  bool end_seen = false;  // the sender's end_of_stream frame is in (maybe before earlier ones)
  int concealed_in_a_row = 0;
  int64_t frames_pushed = 0;   // frames (or losses) pushed to the batcher
  int64_t pending_frames = 0;  // pushed, not yet ticked
  int64_t samples_out = 0;     // decoder output so far
  uint64_t capture_times_us[kCaptureTimeRing] = {};  // by frame pushed
  bool ending = false;
  std::vector<OpusReceiver> receivers;
};

MediaEngine::MediaEngine(const EncodecModel& model, int threads, int reorder_window_frames,
                         EngineCounters& counters)
    : model_(model),
      threads_(std::max(1, threads)),
      reorder_window_frames_(std::max(1, reorder_window_frames)),
      hop_(model.config().hop_length()),
      counters_(counters),
      batcher_(std::make_unique<StreamBatcher>(model)),
      job_pool_(kQueueJobs),
      audio_scratch_(16384),
      packet_scratch_(net::kMaxDatagramBytes) {
  for (Job& job : job_pool_) free_jobs_.push(&job);
}

MediaEngine::~MediaEngine() { stop(); }

void MediaEngine::set_code_forwarder(CodeForwarder forwarder) {
  forward_codes_ = std::move(forwarder);
}

void MediaEngine::set_removal_listener(RemovalListener listener) {
  removal_listener_ = std::move(listener);
}

void MediaEngine::start() {
  if (running_.exchange(true)) return;
  thread_ = std::thread([this] { run(); });
}

void MediaEngine::stop() {
  if (!running_.exchange(false)) return;
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void MediaEngine::open_encoder(uint64_t session, std::shared_ptr<Peer> peer,
                               double bandwidth_kbps) {
  auto control = std::make_unique<Control>();
  control->kind = Control::Kind::kOpenEncoder;
  control->session = session;
  control->peer = std::move(peer);
  control->bandwidth_kbps = bandwidth_kbps;
  push_control(std::move(control));
}

void MediaEngine::open_opus_sender(uint64_t session, int frame_samples, double bandwidth_kbps) {
  auto control = std::make_unique<Control>();
  control->kind = Control::Kind::kOpenOpusSender;
  control->session = session;
  control->frame_samples = frame_samples;
  control->bandwidth_kbps = bandwidth_kbps;
  push_control(std::move(control));
}

void MediaEngine::add_opus_receiver(uint64_t sender, uint32_t sender_stream_id, uint64_t receiver,
                                    std::shared_ptr<Peer> peer, int bitrate_bps,
                                    int frame_samples) {
  auto control = std::make_unique<Control>();
  control->kind = Control::Kind::kAddOpusReceiver;
  control->session = sender;
  control->sender_stream_id = sender_stream_id;
  control->receiver = receiver;
  control->peer = std::move(peer);
  control->bitrate_bps = bitrate_bps;
  control->frame_samples = frame_samples;
  push_control(std::move(control));
}

void MediaEngine::remove_session(uint64_t session) {
  auto control = std::make_unique<Control>();
  control->kind = Control::Kind::kRemoveSession;
  control->session = session;
  push_control(std::move(control));
}

void MediaEngine::push_control(std::unique_ptr<Control> control) {
  {
    std::lock_guard<std::mutex> lock(control_mutex_);
    // Read under the lock, so that the waiting controls' counts never decrease.
    control->after_jobs = jobs_submitted_.load();
    controls_.push_back(std::move(control));
    controls_submitted_.store(true);
  }
  wake_.notify_one();
}

void MediaEngine::enqueue(Job* job) {
  counters_.queued_jobs.fetch_add(1, std::memory_order_relaxed);
  // Counted before the push: a control that counted this job is applied only
  // after it is taken (the queue is FIFO, so every job pushed before the
  // control was read is among the first after_jobs taken).
  jobs_submitted_.fetch_add(1);
  jobs_.push(job);
}

MediaEngine::Job* MediaEngine::take_free_job() {
  Job* job = nullptr;
  if (!free_jobs_.pop(job)) {
    counters_.dropped_jobs.fetch_add(1);
    return nullptr;
  }
  return job;
}

bool MediaEngine::submit_pcm(uint64_t session, const uint8_t* pcm16le, size_t samples,
                             bool end_of_stream) {
  // Split into jobs of at most kMaxJobSamples; the end flag goes with the last.
  size_t done = 0;
  do {
    const size_t count = std::min<size_t>(samples - done, kMaxJobSamples);
    Job* job = take_free_job();
    if (job == nullptr) return false;
    job->kind = Job::Kind::kPcm;
    job->session = session;
    job->count = static_cast<int>(count);
    job->end_of_stream = end_of_stream && done + count == samples;
    for (size_t i = 0; i < count; ++i) {
      const uint8_t* sample = pcm16le + 2 * (done + i);
      const auto value = static_cast<int16_t>(static_cast<uint16_t>(sample[0] | (sample[1] << 8)));
      job->samples[i] = static_cast<float>(value) / 32768.0f;
    }
    enqueue(job);
    done += count;
  } while (done < samples);
  wake_.notify_one();
  return true;
}

bool MediaEngine::submit_codes(uint64_t sender, uint32_t sequence, uint64_t capture_time_us,
                               const int32_t* codes, int num_codebooks, double bandwidth_kbps,
                               bool end_of_stream) {
  Job* job = take_free_job();
  if (job == nullptr) return false;
  job->kind = Job::Kind::kCodes;
  job->session = sender;
  job->sequence = sequence;
  job->capture_time_us = capture_time_us;
  job->bandwidth_kbps = bandwidth_kbps;
  job->end_of_stream = end_of_stream;
  job->count = num_codebooks;
  std::copy_n(codes, num_codebooks, job->codes);
  enqueue(job);
  wake_.notify_one();
  return true;
}

bool MediaEngine::submit_opus(uint64_t sender, uint32_t sequence, uint64_t capture_time_us,
                              const uint8_t* packet, size_t size, bool end_of_stream) {
  if (size > kMaxOpusPacketBytes) return false;
  Job* job = take_free_job();
  if (job == nullptr) return false;
  job->kind = Job::Kind::kOpus;
  job->session = sender;
  job->sequence = sequence;
  job->capture_time_us = capture_time_us;
  job->end_of_stream = end_of_stream;
  job->count = static_cast<int>(size);
  if (size > 0) std::memcpy(job->packet(), packet, size);
  enqueue(job);
  wake_.notify_one();
  return true;
}

void MediaEngine::run() {
  at::set_num_threads(threads_);
  while (running_.load()) {
    bool worked = apply_due_controls();
    worked |= drain_jobs();
    while (has_frame_pending()) {
      tick();
      worked = true;
    }
    finish_ended_streams();
    if (!worked) {
      // Woken by the next submit; the timeout only bounds a wake-up lost to the
      // unlocked notify (and a control waiting for a job still being pushed).
      std::unique_lock<std::mutex> lock(wake_mutex_);
      wake_.wait_for(lock, std::chrono::milliseconds(2));
    }
  }
}

bool MediaEngine::apply_due_controls() {
  if (controls_submitted_.load()) {
    {
      std::lock_guard<std::mutex> lock(control_mutex_);
      controls_taken_.swap(controls_);
      controls_submitted_.store(false);
    }
    for (auto& control : controls_taken_) controls_waiting_.push_back(std::move(control));
    controls_taken_.clear();
  }
  bool applied = false;
  while (!controls_waiting_.empty() && controls_waiting_.front()->after_jobs <= jobs_taken_) {
    const std::unique_ptr<Control> control = std::move(controls_waiting_.front());
    controls_waiting_.pop_front();
    apply(*control);
    applied = true;
  }
  return applied;
}

void MediaEngine::apply(const Control& control) {
  switch (control.kind) {
    case Control::Kind::kOpenEncoder:
    case Control::Kind::kOpenOpusSender: {
      auto encoder = std::make_unique<Encoder>();
      encoder->session = control.session;
      encoder->stream = batcher_->open_stream();
      batcher_->set_bandwidth(encoder->stream, control.bandwidth_kbps);
      encoder->peer = control.peer;
      encoder->bandwidth_kbps = control.bandwidth_kbps;
      if (control.kind == Control::Kind::kOpenOpusSender) {
        std::string error;
        auto input = std::make_unique<OpusInput>();
        input->decoder = net::OpusFrameDecoder::create(model_.sample_rate_hz(),
                                                       control.frame_samples, &error);
        if (!input->decoder) {
          spdlog::warn("Opus decoder for session {:x}: {}", control.session, error);
          batcher_->close_stream(encoder->stream);
          break;
        }
        input->reorder = make_reorder_window(
            1e6 * control.frame_samples / model_.sample_rate_hz(), kMaxOpusPacketBytes,
            reorder_window_frames_);
        input->pcm.resize(static_cast<size_t>(control.frame_samples));
        encoder->opus = std::move(input);
      }
      auto old = encoders_.find(control.session);
      if (old != encoders_.end()) batcher_->close_stream(old->second->stream);
      encoders_[control.session] = std::move(encoder);
      break;
    }
    case Control::Kind::kAddOpusReceiver: {
      std::unique_ptr<Decoder>& decoder = decoders_[control.session];
      if (!decoder) {
        decoder = std::make_unique<Decoder>();
        decoder->stream = batcher_->open_stream();
        decoder->sender_stream_id = control.sender_stream_id;
        decoder->reorder = make_reorder_window(1e6 * hop_ / model_.sample_rate_hz(),
                                               sizeof(int32_t) * kMaxStreamCodebooks,
                                               reorder_window_frames_);
      }
      OpusReceiver receiver;
      receiver.session = control.receiver;
      receiver.peer = control.peer;
      receiver.bitrate_bps = control.bitrate_bps;
      net::OpusFrameOptions options;
      options.sample_rate_hz = model_.sample_rate_hz();
      options.frame_samples = control.frame_samples;
      options.bitrate_bps = control.bitrate_bps;
      std::string error;
      receiver.encoder = net::OpusFrameEncoder::create(options, &error);
      if (!receiver.encoder) {
        spdlog::warn("Opus encoder for session {:x}: {}", control.receiver, error);
        break;
      }
      receiver.pending.reserve(static_cast<size_t>(control.frame_samples) * 4 + 4096);
      receiver.pending_first_sample = decoder->samples_out;
      decoder->receivers.push_back(std::move(receiver));
      break;
    }
    case Control::Kind::kRemoveSession:
      remove(control.session);
      if (removal_listener_) removal_listener_(control.session);
      break;
  }
}

void MediaEngine::remove(uint64_t session) {
  auto encoder = encoders_.find(session);
  if (encoder != encoders_.end()) {
    Encoder& stream = *encoder->second;
    // An Opus sender's last packets may have come just before its Goodbye:
    // what its window holds is encoded and its last codes go to the room.
    if (stream.opus && (stream.opus->started || stream.ending)) {
      if (!stream.ending) encode_in_order(stream, /*stream_ended=*/true);
      stream.ending = true;
      while (stream.pending_samples >= hop_) tick();
      finish_encoder_stream(stream);
    }
    batcher_->close_stream(stream.stream);
    encoders_.erase(encoder);
  }
  auto decoder = decoders_.find(session);
  if (decoder != decoders_.end()) {
    Decoder& stream = *decoder->second;
    // A code sender's last frames still reach its Opus receivers.
    if (stream.started || stream.ending) {
      if (!stream.ending) decode_in_order(stream, /*stream_ended=*/true);
      stream.ending = true;
      while (stream.pending_frames > 0) tick();
      finish_decoder_stream(stream);
    }
    batcher_->close_stream(stream.stream);
    decoders_.erase(decoder);
  }
  for (auto it = decoders_.begin(); it != decoders_.end();) {
    auto& receivers = it->second->receivers;
    receivers.erase(std::remove_if(receivers.begin(), receivers.end(),
                                   [&](const OpusReceiver& receiver) {
                                     return receiver.session == session;
                                   }),
                    receivers.end());
    if (receivers.empty()) {
      batcher_->close_stream(it->second->stream);
      it = decoders_.erase(it);
    } else {
      ++it;
    }
  }
}

bool MediaEngine::drain_jobs() {
  bool any = false;
  Job* job = nullptr;
  for (;;) {
    // Controls whose place has come go before the next job.
    apply_due_controls();
    if (!jobs_.pop(job)) break;
    ++jobs_taken_;
    counters_.queued_jobs.fetch_sub(1, std::memory_order_relaxed);
    any = true;
    // A job for a stream not (or no longer) open: its session left, or (rarely)
    // it overtook its stream's opening in the queue.
    if (!handle(*job) && !(apply_due_controls() && handle(*job))) {
      counters_.discarded_jobs.fetch_add(1);
    }
    free_jobs_.push(job);
    // Tick between jobs when a frame is ready, so that a fast sender's audio
    // does not pile up in the batcher's queues.
    while (has_frame_pending()) tick();
  }
  return any;
}

bool MediaEngine::handle(const Job& job) {
  switch (job.kind) {
    case Job::Kind::kPcm: return handle_pcm(job);
    case Job::Kind::kCodes: return handle_codes(job);
    case Job::Kind::kOpus: return handle_opus(job);
  }
  return true;
}

bool MediaEngine::handle_pcm(const Job& job) {
  auto found = encoders_.find(job.session);
  if (found == encoders_.end()) return false;
  Encoder& encoder = *found->second;
  if (encoder.ending || encoder.opus) return true;
  batcher_->push_audio(encoder.stream, job.samples, job.count);
  encoder.pending_samples += job.count;
  if (job.end_of_stream) encoder.ending = true;
  return true;
}

namespace {

// What a reorder window said of an insert, into the engine's counters. A
// packet too far ahead is the caller's to handle.
void count_insert(net::JitterBuffer::Insert result, EngineCounters& counters) {
  if (result == net::JitterBuffer::Insert::kDuplicate) counters.reorder_duplicates.fetch_add(1);
  if (result == net::JitterBuffer::Insert::kLate) counters.reorder_late.fetch_add(1);
  if (result == net::JitterBuffer::Insert::kTooLarge) counters.discarded_jobs.fetch_add(1);
}

// One frame into a stream's reorder window (a Decoder's or an OpusInput's).
// A frame too far ahead (an outage longer than the window) first has
// `flush_window` hand out what the window holds, then the stream goes on from it.
template <typename WindowedStream, typename Flush>
void insert_in_window(WindowedStream& stream, uint32_t sequence, uint64_t capture_time_us,
                      bool end_of_stream, const uint8_t* payload, size_t size, Flush flush_window,
                      EngineCounters& counters) {
  net::JitterBuffer::Insert result = stream.reorder->insert(sequence, payload, size);
  if (result == net::JitterBuffer::Insert::kTooFarAhead) {
    flush_window();
    stream.reorder->reset();
    result = stream.reorder->insert(sequence, payload, size);
  }
  count_insert(result, counters);
  if (result == net::JitterBuffer::Insert::kAccepted) {
    stream.started = true;
    stream.arrival_capture_us[sequence % kReorderCapacityFrames] = capture_time_us;
    if (end_of_stream) stream.end_seen = true;
  }
}

}  // namespace

bool MediaEngine::handle_codes(const Job& job) {
  auto found = decoders_.find(job.session);
  if (found == decoders_.end()) return false;
  Decoder& decoder = *found->second;
  if (decoder.ending) return true;
  if (job.count == 0) {
    // An end mark without a frame (senders repeat it): ends a started stream
    // once what its window holds is decoded.
    if (job.end_of_stream && decoder.started) {
      decode_in_order(decoder, /*stream_ended=*/true);
      decoder.ending = true;
    }
    return true;
  }
  const auto* payload = reinterpret_cast<const uint8_t*>(job.codes);
  const size_t size = sizeof(int32_t) * static_cast<size_t>(job.count);
  insert_in_window(decoder, job.sequence, job.capture_time_us, job.end_of_stream, payload, size,
                   [&] { decode_in_order(decoder, /*stream_ended=*/true); }, counters_);
  decode_in_order(decoder, decoder.end_seen);
  // With the end in, the window gave out every frame up to it.
  if (decoder.end_seen) decoder.ending = true;
  return true;
}

void MediaEngine::decode_in_order(Decoder& decoder, bool stream_ended) {
  if (!reorder_window_ready(*decoder.reorder, stream_ended)) return;
  net::JitterBuffer::Slot slot;
  for (;;) {
    const net::JitterBuffer::Playout playout = decoder.reorder->next_in_order(&slot, stream_ended);
    if (playout == net::JitterBuffer::Playout::kWaiting) return;
    uint64_t capture_time_us = 0;
    if (playout == net::JitterBuffer::Playout::kFrame) {
      CodeFrame frame;
      frame.num_codebooks = static_cast<int>(slot.size / sizeof(int32_t));
      std::memcpy(frame.codes.data(), slot.payload, slot.size);
      batcher_->push_codes(decoder.stream, frame);
      capture_time_us = decoder.arrival_capture_us[slot.sequence % kReorderCapacityFrames];
      decoder.concealed_in_a_row = 0;
    } else {  // kConceal: the frame did not come within the window
      counters_.transcode_concealed.fetch_add(1);
      if (decoder.concealed_in_a_row++ >= kMaxConcealedGap) continue;
      batcher_->push_lost(decoder.stream);
    }
    decoder.capture_times_us[decoder.frames_pushed % kCaptureTimeRing] = capture_time_us;
    ++decoder.frames_pushed;
    ++decoder.pending_frames;
  }
}

bool MediaEngine::handle_opus(const Job& job) {
  auto found = encoders_.find(job.session);
  if (found == encoders_.end()) return false;
  Encoder& encoder = *found->second;
  if (encoder.ending || !encoder.opus) return true;
  OpusInput& input = *encoder.opus;
  if (job.count == 0) {
    if (job.end_of_stream && input.started) {
      encode_in_order(encoder, /*stream_ended=*/true);
      encoder.ending = true;
    }
    return true;
  }
  const size_t size = static_cast<size_t>(job.count);
  insert_in_window(input, job.sequence, job.capture_time_us, job.end_of_stream, job.packet(), size,
                   [&] { encode_in_order(encoder, /*stream_ended=*/true); }, counters_);
  encode_in_order(encoder, input.end_seen);
  if (input.end_seen) encoder.ending = true;
  return true;
}

void MediaEngine::encode_in_order(Encoder& encoder, bool stream_ended) {
  OpusInput& input = *encoder.opus;
  if (!reorder_window_ready(*input.reorder, stream_ended)) return;
  net::JitterBuffer::Slot slot;
  for (;;) {
    const net::JitterBuffer::Playout playout = input.reorder->next_in_order(&slot, stream_ended);
    if (playout == net::JitterBuffer::Playout::kWaiting) return;
    uint64_t capture_time_us = 0;
    if (playout == net::JitterBuffer::Playout::kFrame) {
      // A packet libopus refuses (or of another frame length) is concealed in its place.
      if (input.decoder->decode(slot.payload, slot.size, input.pcm.data())) {
        counters_.opus_in_frames.fetch_add(1);
      } else {
        counters_.opus_in_malformed.fetch_add(1);
      }
      capture_time_us = input.arrival_capture_us[slot.sequence % kReorderCapacityFrames];
      input.concealed_in_a_row = 0;
    } else {
      counters_.opus_in_concealed.fetch_add(1);
      if (input.concealed_in_a_row++ >= kMaxConcealedGap) continue;
      input.decoder->conceal(input.pcm.data());
    }
    batcher_->push_audio(encoder.stream, input.pcm.data(), static_cast<int64_t>(input.pcm.size()));
    encoder.pending_samples += static_cast<int64_t>(input.pcm.size());
    input.capture_times_us[input.frames_pushed % kCaptureTimeRing] = capture_time_us;
    ++input.frames_pushed;
  }
}

bool MediaEngine::has_frame_pending() const {
  for (const auto& [session, encoder] : encoders_) {
    if (encoder->pending_samples >= hop_) return true;
  }
  for (const auto& [session, decoder] : decoders_) {
    if (decoder->pending_frames > 0) return true;
  }
  return false;
}

void MediaEngine::tick() {
  // Only the sides with a frame tick: a batched stream without a frame at a
  // tick leaves its lane and rejoins later, which copies its state (and
  // allocates), so a lone encoder stream (an Opus sender) must not be ticked on
  // the code frames that drive the decoders, nor the decoders on its audio.
  const auto start = std::chrono::steady_clock::now();
  bool encoding = false, decoding = false;
  for (const auto& [session, encoder] : encoders_) encoding |= encoder->pending_samples >= hop_;
  for (const auto& [session, decoder] : decoders_) decoding |= decoder->pending_frames > 0;
  if (encoding && decoding) {
    batcher_->tick();
  } else if (encoding) {
    batcher_->encode_tick();
  } else {
    batcher_->decode_tick();
  }
  counters_.ticks.fetch_add(1);
  for (auto& [session, encoder] : encoders_) {
    if (encoder->pending_samples >= hop_) encoder->pending_samples -= hop_;
    collect_codes(*encoder, /*last=*/false);
  }
  for (auto& [session, decoder] : decoders_) {
    if (decoder->pending_frames > 0) --decoder->pending_frames;
    collect_audio(*decoder);
  }
  counters_.tick_time.observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
}

void MediaEngine::collect_codes(Encoder& encoder, bool last) {
  // One frame of lookahead, so that the stream's last frame carries end_of_stream.
  CodeFrame frame, next;
  bool have = batcher_->pop_codes(encoder.stream, &frame);
  if (!have && last) {
    // Every frame went out before the end was known: an empty frame marks it.
    send_codes(encoder, nullptr, true);
    return;
  }
  while (have) {
    const bool more = batcher_->pop_codes(encoder.stream, &next);
    send_codes(encoder, &frame, last && !more);
    frame = next;
    have = more;
  }
}

void MediaEngine::send_codes(Encoder& encoder, const CodeFrame* frame, bool end_of_stream) {
  wire::Envelope* envelope = &out_;
  wire::Media* media = net::reuse_media(envelope);
  media->set_sequence(encoder.next_sequence);
  media->set_timestamp_samples(uint64_t{encoder.next_sequence} * hop_);
  media->set_bandwidth_kbps(encoder.bandwidth_kbps);
  media->set_kind(wire::PAYLOAD_KIND_RAW_CODES);
  media->set_end_of_stream(end_of_stream);
  if (frame != nullptr) {
    media->set_num_codebooks(static_cast<uint32_t>(frame->num_codebooks));
    const size_t bytes = net::pack_raw_codes(frame->codes.data(), frame->num_codebooks,
                                             model_.config().bits_per_codebook(),
                                             packet_scratch_.data());
    media->set_payload(packet_scratch_.data(), bytes);
    if (encoder.opus) {
      // The Opus frame that completed this code frame: its capture time.
      const int64_t last_sample = int64_t{encoder.next_sequence + 1} * hop_ - 1;
      const int64_t opus_frame = last_sample / static_cast<int64_t>(encoder.opus->pcm.size());
      media->set_capture_time_us(encoder.opus->capture_times_us[opus_frame % kCaptureTimeRing]);
    }
    ++encoder.next_sequence;
    (encoder.opus ? counters_.opus_in_encoded_frames : counters_.encoded_frames).fetch_add(1);
  }
  if (encoder.opus) {
    // Into the sender's room, as the frames of a member that sends codes.
    if (forward_codes_) forward_codes_(encoder.session, *media);
    return;
  }
  if (encoder.peer->send(*envelope)) {
    counters_.media_out.fetch_add(1);
  } else {
    counters_.send_dropped.fetch_add(1);
  }
}

void MediaEngine::collect_audio(Decoder& decoder) {
  const int64_t ready = batcher_->samples_ready(decoder.stream);
  if (ready <= 0) return;
  if (static_cast<int64_t>(audio_scratch_.size()) < ready) audio_scratch_.resize(ready);
  const int64_t count = batcher_->pop_audio(decoder.stream, audio_scratch_.data(), ready);
  for (OpusReceiver& receiver : decoder.receivers) {
    receiver.pending.insert(receiver.pending.end(), audio_scratch_.data(),
                            audio_scratch_.data() + count);
    const int frame_samples = receiver.encoder->frame_samples();
    size_t consumed = 0;
    while (receiver.pending.size() - consumed >= static_cast<size_t>(frame_samples)) {
      const size_t bytes = receiver.encoder->encode(receiver.pending.data() + consumed,
                                                    packet_scratch_.data(), packet_scratch_.size());
      // The code frame that completed this Opus frame: its capture time.
      const int64_t last_sample = receiver.pending_first_sample + consumed + frame_samples - 1;
      const int64_t frame_index = last_sample / hop_;
      consumed += frame_samples;
      if (bytes == 0) continue;
      wire::Envelope* envelope = &out_;
      wire::Media* media = net::reuse_media(envelope);
      media->set_stream_id(decoder.sender_stream_id);
      media->set_sequence(receiver.next_sequence);
      media->set_timestamp_samples(uint64_t{receiver.next_sequence} * frame_samples);
      media->set_bandwidth_kbps(receiver.bitrate_bps / 1000.0);
      media->set_kind(wire::PAYLOAD_KIND_OPUS);
      media->set_payload(packet_scratch_.data(), bytes);
      media->set_capture_time_us(decoder.capture_times_us[frame_index % kCaptureTimeRing]);
      ++receiver.next_sequence;
      counters_.transcoded_frames.fetch_add(1);
      if (receiver.peer->send(*envelope)) {
        counters_.media_out.fetch_add(1);
      } else {
        counters_.send_dropped.fetch_add(1);
      }
    }
    receiver.pending.erase(receiver.pending.begin(),
                           receiver.pending.begin() + static_cast<std::ptrdiff_t>(consumed));
    receiver.pending_first_sample += static_cast<int64_t>(consumed);
  }
  decoder.samples_out += count;
}

void MediaEngine::finish_encoder_stream(Encoder& encoder) {
  batcher_->finish_audio(encoder.stream);
  collect_codes(encoder, /*last=*/true);
}

void MediaEngine::finish_decoder_stream(Decoder& decoder) {
  batcher_->finish_codes(decoder.stream);
  collect_audio(decoder);
  // The Opus streams end too (their last partial frame is dropped, as a
  // partial frame cannot be an Opus packet).
  for (OpusReceiver& receiver : decoder.receivers) {
    wire::Envelope* envelope = &out_;
    wire::Media* media = net::reuse_media(envelope);
    media->set_stream_id(decoder.sender_stream_id);
    media->set_sequence(receiver.next_sequence);
    media->set_kind(wire::PAYLOAD_KIND_OPUS);
    media->set_end_of_stream(true);
    receiver.peer->send(*envelope);
    receiver.next_sequence = 0;
  }
}

void MediaEngine::finish_ended_streams() {
  for (auto it = encoders_.begin(); it != encoders_.end();) {
    Encoder& encoder = *it->second;
    if (!encoder.ending || encoder.pending_samples >= hop_) {
      ++it;
      continue;
    }
    finish_encoder_stream(encoder);
    batcher_->close_stream(encoder.stream);
    if (!encoder.opus) {
      it = encoders_.erase(it);
      continue;
    }
    // A member that sends Opus stays in its room: a fresh stream for its next one.
    encoder.stream = batcher_->open_stream();
    batcher_->set_bandwidth(encoder.stream, encoder.bandwidth_kbps);
    encoder.pending_samples = 0;
    encoder.next_sequence = 0;
    encoder.ending = false;
    OpusInput& input = *encoder.opus;
    input.decoder->reset();
    input.reorder->reset();
    input.started = input.end_seen = false;
    input.concealed_in_a_row = 0;
    input.frames_pushed = 0;
    ++it;
  }
  for (auto it = decoders_.begin(); it != decoders_.end(); ++it) {
    Decoder& decoder = *it->second;
    if (!decoder.ending || decoder.pending_frames > 0) continue;
    finish_decoder_stream(decoder);
    // A fresh stream for the sender's next stream (same receivers).
    batcher_->close_stream(decoder.stream);
    decoder.stream = batcher_->open_stream();
    decoder.reorder->reset();
    decoder.started = decoder.end_seen = decoder.ending = false;
    decoder.concealed_in_a_row = 0;
    decoder.frames_pushed = 0;
    decoder.samples_out = 0;
    for (OpusReceiver& receiver : decoder.receivers) {
      receiver.pending.clear();
      receiver.pending_first_sample = 0;
    }
  }
}

}  // namespace encodec::server
