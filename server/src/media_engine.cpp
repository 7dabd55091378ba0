#include "media_engine.h"

#include <algorithm>
#include <chrono>
#include <string>

#include <ATen/Parallel.h>
#include <spdlog/spdlog.h>

#include "encodec/net/codes_payload.h"

namespace encodec::server {

namespace {

// Decoded frames whose capture times are remembered, to stamp the Opus frames
// made from them (a ring: enough for any start delay).
constexpr int kCaptureTimeRing = 64;
// A sender's gap longer than this is not concealed frame by frame: the stream restarts.
constexpr uint32_t kMaxConcealedGap = 16;

}  // namespace

struct MediaEngine::Control {
  enum class Kind { kOpenEncoder, kAddOpusReceiver, kRemoveSession } kind;
  uint64_t session = 0;     // encoder session, or sender
  uint64_t receiver = 0;
  uint32_t sender_stream_id = 0;
  std::shared_ptr<Peer> peer;
  double bandwidth_kbps = 0.0;
  int bitrate_bps = 0;
  int frame_samples = 0;
};

struct MediaEngine::Encoder {
  StreamBatcher::StreamId stream = 0;
  std::shared_ptr<Peer> peer;
  double bandwidth_kbps = 0.0;
  int64_t pending_samples = 0;  // pushed, not yet ticked
  uint32_t next_sequence = 0;
  bool ending = false;
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
  bool started = false;
  uint32_t first_sequence = 0;
  uint32_t expected_sequence = 0;
  int64_t pending_frames = 0;  // pushed, not yet ticked
  int64_t samples_out = 0;     // decoder output so far
  uint64_t capture_times_us[kCaptureTimeRing] = {};
  bool ending = false;
  std::vector<OpusReceiver> receivers;
};

MediaEngine::MediaEngine(const EncodecModel& model, int threads, EngineCounters& counters)
    : model_(model),
      threads_(std::max(1, threads)),
      hop_(model.config().hop_length()),
      counters_(counters),
      batcher_(std::make_unique<StreamBatcher>(model)),
      job_pool_(kQueueJobs),
      audio_scratch_(16384),
      packet_scratch_(net::kMaxDatagramBytes) {
  for (Job& job : job_pool_) free_jobs_.push(&job);
}

MediaEngine::~MediaEngine() { stop(); }

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
  std::lock_guard<std::mutex> lock(control_mutex_);
  controls_.push_back(std::move(control));
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
  std::lock_guard<std::mutex> lock(control_mutex_);
  controls_.push_back(std::move(control));
}

void MediaEngine::remove_session(uint64_t session) {
  auto control = std::make_unique<Control>();
  control->kind = Control::Kind::kRemoveSession;
  control->session = session;
  std::lock_guard<std::mutex> lock(control_mutex_);
  controls_.push_back(std::move(control));
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
    jobs_.push(job);
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
  jobs_.push(job);
  wake_.notify_one();
  return true;
}

void MediaEngine::run() {
  at::set_num_threads(threads_);
  while (running_.load()) {
    bool worked = drain_controls();
    worked |= drain_jobs();
    while (has_frame_pending()) {
      tick();
      worked = true;
    }
    finish_ended_streams();
    if (!worked) {
      // Woken by the next submit; the timeout only bounds a wake-up lost to the
      // unlocked notify.
      std::unique_lock<std::mutex> lock(wake_mutex_);
      wake_.wait_for(lock, std::chrono::milliseconds(2));
    }
  }
}

bool MediaEngine::drain_controls() {
  {
    std::lock_guard<std::mutex> lock(control_mutex_);
    if (controls_.empty()) return false;
    controls_taken_.swap(controls_);
  }
  for (auto& control : controls_taken_) {
    switch (control->kind) {
      case Control::Kind::kOpenEncoder: {
        auto encoder = std::make_unique<Encoder>();
        encoder->stream = batcher_->open_stream();
        batcher_->set_bandwidth(encoder->stream, control->bandwidth_kbps);
        encoder->peer = control->peer;
        encoder->bandwidth_kbps = control->bandwidth_kbps;
        auto old = encoders_.find(control->session);
        if (old != encoders_.end()) batcher_->close_stream(old->second->stream);
        encoders_[control->session] = std::move(encoder);
        break;
      }
      case Control::Kind::kAddOpusReceiver: {
        std::unique_ptr<Decoder>& decoder = decoders_[control->session];
        if (!decoder) {
          decoder = std::make_unique<Decoder>();
          decoder->stream = batcher_->open_stream();
          decoder->sender_stream_id = control->sender_stream_id;
        }
        OpusReceiver receiver;
        receiver.session = control->receiver;
        receiver.peer = control->peer;
        receiver.bitrate_bps = control->bitrate_bps;
        net::OpusFrameOptions options;
        options.sample_rate_hz = model_.sample_rate_hz();
        options.frame_samples = control->frame_samples;
        options.bitrate_bps = control->bitrate_bps;
        std::string error;
        receiver.encoder = net::OpusFrameEncoder::create(options, &error);
        if (!receiver.encoder) {
          spdlog::warn("Opus encoder for session {:x}: {}", control->receiver, error);
          break;
        }
        receiver.pending.reserve(static_cast<size_t>(control->frame_samples) * 4 + 4096);
        receiver.pending_first_sample = decoder->samples_out;
        decoder->receivers.push_back(std::move(receiver));
        break;
      }
      case Control::Kind::kRemoveSession: {
        auto encoder = encoders_.find(control->session);
        if (encoder != encoders_.end()) {
          batcher_->close_stream(encoder->second->stream);
          encoders_.erase(encoder);
        }
        auto decoder = decoders_.find(control->session);
        if (decoder != decoders_.end()) {
          batcher_->close_stream(decoder->second->stream);
          decoders_.erase(decoder);
        }
        for (auto it = decoders_.begin(); it != decoders_.end();) {
          auto& receivers = it->second->receivers;
          receivers.erase(std::remove_if(receivers.begin(), receivers.end(),
                                         [&](const OpusReceiver& receiver) {
                                           return receiver.session == control->session;
                                         }),
                          receivers.end());
          if (receivers.empty()) {
            batcher_->close_stream(it->second->stream);
            it = decoders_.erase(it);
          } else {
            ++it;
          }
        }
        break;
      }
    }
  }
  controls_taken_.clear();
  return true;
}

bool MediaEngine::drain_jobs() {
  bool any = false;
  Job* job = nullptr;
  while (jobs_.pop(job)) {
    any = true;
    job->kind == Job::Kind::kPcm ? handle_pcm(*job) : handle_codes(*job);
    free_jobs_.push(job);
    // Tick between jobs when a frame is ready, so that a fast sender's audio
    // does not pile up in the batcher's queues.
    while (has_frame_pending()) tick();
  }
  return any;
}

void MediaEngine::handle_pcm(const Job& job) {
  auto found = encoders_.find(job.session);
  if (found == encoders_.end() || found->second->ending) return;
  Encoder& encoder = *found->second;
  batcher_->push_audio(encoder.stream, job.samples, job.count);
  encoder.pending_samples += job.count;
  if (job.end_of_stream) encoder.ending = true;
}

void MediaEngine::handle_codes(const Job& job) {
  auto found = decoders_.find(job.session);
  if (found == decoders_.end() || found->second->ending) return;
  Decoder& decoder = *found->second;
  if (job.count == 0) {
    // An end mark without a frame (senders repeat it): ends a started stream.
    if (job.end_of_stream && decoder.started) decoder.ending = true;
    return;
  }
  if (!decoder.started) {
    decoder.started = true;
    decoder.first_sequence = decoder.expected_sequence = job.sequence;
  }
  if (job.sequence < decoder.expected_sequence) return;  // late or duplicate: already concealed
  if (job.sequence - decoder.expected_sequence > kMaxConcealedGap) {
    decoder.expected_sequence = job.sequence - kMaxConcealedGap;
  }
  while (decoder.expected_sequence < job.sequence) {
    batcher_->push_lost(decoder.stream);
    decoder.capture_times_us[decoder.expected_sequence % kCaptureTimeRing] = 0;
    ++decoder.expected_sequence;
    ++decoder.pending_frames;
  }
  CodeFrame frame;
  frame.num_codebooks = job.count;
  std::copy_n(job.codes, job.count, frame.codes.begin());
  batcher_->push_codes(decoder.stream, frame);
  decoder.capture_times_us[job.sequence % kCaptureTimeRing] = job.capture_time_us;
  decoder.expected_sequence = job.sequence + 1;
  ++decoder.pending_frames;
  if (job.end_of_stream) decoder.ending = true;
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
  batcher_->tick();
  counters_.ticks.fetch_add(1);
  for (auto& [session, encoder] : encoders_) {
    if (encoder->pending_samples >= hop_) encoder->pending_samples -= hop_;
    collect_codes(*encoder, /*last=*/false);
  }
  for (auto& [session, decoder] : decoders_) {
    if (decoder->pending_frames > 0) --decoder->pending_frames;
    collect_audio(*decoder);
  }
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
    ++encoder.next_sequence;
    counters_.encoded_frames.fetch_add(1);
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
      const uint32_t frame_index = decoder.first_sequence + static_cast<uint32_t>(last_sample / hop_);
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

void MediaEngine::finish_ended_streams() {
  for (auto it = encoders_.begin(); it != encoders_.end();) {
    Encoder& encoder = *it->second;
    if (!encoder.ending || encoder.pending_samples >= hop_) {
      ++it;
      continue;
    }
    batcher_->finish_audio(encoder.stream);
    collect_codes(encoder, /*last=*/true);
    batcher_->close_stream(encoder.stream);
    it = encoders_.erase(it);
  }
  for (auto it = decoders_.begin(); it != decoders_.end(); ++it) {
    Decoder& decoder = *it->second;
    if (!decoder.ending || decoder.pending_frames > 0) continue;
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
    // A fresh stream for the sender's next stream (same receivers).
    batcher_->close_stream(decoder.stream);
    decoder.stream = batcher_->open_stream();
    decoder.started = decoder.ending = false;
    decoder.samples_out = 0;
    for (OpusReceiver& receiver : decoder.receivers) {
      receiver.pending.clear();
      receiver.pending_first_sample = 0;
    }
  }
}

}  // namespace encodec::server
