//! A trivial upstream for `bench/gateway.sh`: answers `ok` on every path,
//! on one thread, at the address given (default `127.0.0.1:9100`).

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9100".into());
    let app = axum::Router::new().fallback(|| async { "ok" });
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("ready {}", listener.local_addr()?);
    axum::serve(listener, app).await
}
