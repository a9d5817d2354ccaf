//! Black-box tests of the edge: services served by the runner, over real
//! sockets.

mod front;
mod tls;
