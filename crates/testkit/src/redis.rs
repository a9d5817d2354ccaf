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
        let cleaned = self.delete();
        // A test that failed already (perhaps because Redis is down) still
        // cleans what it can, but a second panic would abort every other
        // test.
        if !std::thread::panicking() {
            cleaned.expect("Redis for cleanup");
        }
    }
}

impl RedisKeys {
    /// Deletes every key under the prefix.
    fn delete(&self) -> redis::RedisResult<()> {
        use redis::Commands;
        let mut redis = redis::Client::open(self.url.as_str())?.get_connection()?;
        let keys: Vec<String> = redis
            .scan_match::<_, String>(format!("{}*", self.prefix))?
            .collect::<Result<_, _>>()?;
        if !keys.is_empty() {
            redis.del::<_, ()>(keys)?;
        }
        Ok(())
    }
}
