//! A test's own keys in the machine's Redis.

/// Keys under a random prefix in Redis ([`crate::redis_url`]), all deleted
/// on drop.
pub struct RedisKeys {
    pub url: String,
    pub prefix: String,
}

impl RedisKeys {
    pub fn new() -> Self {
        let url = crate::redis_url();
        let prefix = format!(
            "echo:test:{}:",
            echo_crypto::secret::token_hash(&echo_crypto::secret::random_token())
        );
        Self { url, prefix }
    }
}

impl Default for RedisKeys {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for RedisKeys {
    fn drop(&mut self) {
        use redis::Commands;
        if std::thread::panicking() {
            // The test failed already (perhaps because Redis is down): a
            // second panic would abort every other test.
            return;
        }
        let mut redis = redis::Client::open(self.url.as_str())
            .and_then(|client| client.get_connection())
            .expect("Redis for cleanup");
        let keys: Vec<String> = redis
            .scan_match::<_, String>(format!("{}*", self.prefix))
            .expect("SCAN")
            .collect::<Result<_, _>>()
            .expect("SCAN");
        if !keys.is_empty() {
            redis.del::<_, ()>(keys).expect("DEL");
        }
    }
}
