#include "server_internal.h"

namespace encodec::server {

SeenHellos::Seen SeenHellos::remember(const std::string& nonce, int64_t now_us) {
  std::lock_guard<std::mutex> lock(mutex_);
  while (!by_age_.empty() && now_us - by_age_.front().first > kMemoryUs) {
    session_by_nonce_.erase(by_age_.front().second);
    by_age_.pop_front();
  }
  if (session_by_nonce_.count(nonce) > 0) return Seen::kBefore;
  if (session_by_nonce_.size() >= kMaxRemembered) return Seen::kFull;
  session_by_nonce_.emplace(nonce, 0);
  by_age_.emplace_back(now_us, nonce);
  return Seen::kNew;
}

void SeenHellos::set_session(const std::string& nonce, uint64_t session_id) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto found = session_by_nonce_.find(nonce);
  if (found != session_by_nonce_.end()) found->second = session_id;
}

uint64_t SeenHellos::session_of(const std::string& nonce) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto found = session_by_nonce_.find(nonce);
  return found == session_by_nonce_.end() ? 0 : found->second;
}

}  // namespace encodec::server
