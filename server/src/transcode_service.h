// The offline side of encodecd's HTTP endpoint: POST /v1/encode and
// /v1/decode run as jobs on a few worker threads behind a bounded queue, with
// the encodec command's own file coding (encodec/file_coding.h), so a request
// gives the bytes the CLI writes for the same input and options.
//
// A request is checked on the HTTP thread before it is queued (parameters, the
// audio's or .ecdc header's format and length: cheap, no model), so bad input
// is answered at once and never holds a worker. Models load on first use and
// stay loaded. Workers run at a lower scheduling priority than the media
// server's real-time compute thread (nice +10), so transcoding never takes a
// live call's ticks.
//
// Thread safety: every member function may be called from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "encodec/audio_stream.h"
#include "encodec/ecdc.h"
#include "encodec/encodec.h"
#include "encodec/http_endpoint.h"
#include "encodec/lm.h"

namespace encodec::server {

// An HTTP answer: status, content type, body (a result, or JSON {"error": ...}).
struct HttpAnswer {
  unsigned status = 200;
  std::string content_type;
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // more fields

  static HttpAnswer json_error(unsigned status, const std::string& message);
};

// The codecs and LMs that transcoding jobs run, loaded when first asked for.
class TranscodeModels {
 public:
  explicit TranscodeModels(TranscodeModelSources sources);
  // A copy of the model (sharing its weights) for one job. Throws
  // std::runtime_error saying why when the model cannot be loaded.
  EncodecModel codec(const std::string& model_name);
  const LmModel& lm(const std::string& model_name);

 private:
  TranscodeModelSources sources_;
  std::mutex mutex_;
  std::map<std::string, EncodecModel> codecs_;
  std::map<std::string, std::unique_ptr<LmModel>> lms_;
};

struct TranscodeJob {
  enum class Kind { kEncode, kDecode };
  enum class State { kQueued, kRunning, kDone };

  // Set before it is queued.
  std::string id;
  Kind kind = Kind::kEncode;
  bool asynchronous = false;  // over sync_limit_seconds: answered 202, kept for GET /v1/jobs/ID
  std::shared_ptr<const std::string> input;
  std::string model_name;
  double bandwidth_kbps = 0.0;
  bool lm = false;
  bool rescale = false;
  double audio_seconds = 0.0;
  int64_t audio_length = 0;  // samples at the model's rate
  std::optional<AudioFileReader> reader;  // an encode job's input, opened by the check
  // A synchronous job's answer goes here (called on a worker thread).
  std::function<void(const HttpAnswer&)> on_done;

  std::atomic<State> state{State::kQueued};
  std::atomic<double> seconds_done{0.0};
  std::atomic<bool> cancelled{false};  // DELETE /v1/jobs/ID while it runs
  // Once kDone (then read-only): the answer, and when it was made.
  HttpAnswer answer;
  std::chrono::steady_clock::time_point finished;
};

class TranscodeService {
 public:
  TranscodeService(const HttpOptions& options, TranscodeModels& models);
  ~TranscodeService();
  TranscodeService(const TranscodeService&) = delete;
  TranscodeService& operator=(const TranscodeService&) = delete;

  // A job for POST /v1/encode (`query`: the URL's query string) or
  // /v1/decode, checked; or the error answer (400, 413) saying what is wrong.
  std::shared_ptr<TranscodeJob> check_encode(const std::string& query,
                                             std::shared_ptr<const std::string> body,
                                             HttpAnswer* error) const;
  std::shared_ptr<TranscodeJob> check_decode(const std::string& query,
                                             std::shared_ptr<const std::string> body,
                                             HttpAnswer* error) const;

  // Queues the job, or answers 503 with Retry-After when the queue is full.
  std::optional<HttpAnswer> submit(std::shared_ptr<TranscodeJob> job);
  // GET /v1/jobs/ID: 202 with progress while queued or running, then the
  // result; 404 for an unknown (or expired) id.
  HttpAnswer job_status(const std::string& id);
  // DELETE /v1/jobs/ID: forgets the job (a queued one never runs).
  HttpAnswer cancel(const std::string& id);

  size_t queue_depth() const;
  size_t running() const;
  void stop();

 private:
  void work();
  HttpAnswer run(TranscodeJob& job);
  HttpAnswer encode(TranscodeJob& job);
  HttpAnswer decode(TranscodeJob& job);
  void forget_expired_locked();
  int retry_after_seconds_locked() const;

  HttpOptions options_;
  TranscodeModels& models_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::shared_ptr<TranscodeJob>> queue_;
  std::map<std::string, std::shared_ptr<TranscodeJob>> jobs_;  // asynchronous ones
  size_t running_ = 0;
  double mean_job_seconds_ = 1.0;
  std::atomic<bool> stopping_{false};
  std::vector<std::thread> workers_;
};

}  // namespace encodec::server
