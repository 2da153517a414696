//! A plain TCP load balancer for tests of a cluster: each new connection goes to the
//! next node in turn (no sticky sessions), as a production balancer in front of several
//! nodes would do. A node that refuses is skipped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A running balancer; stops when dropped.
#[derive(Debug)]
pub struct Balancer {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Balancer {
    /// Listens on a free port of 127.0.0.1 and spreads connections over `nodes`.
    pub fn start(nodes: Vec<SocketAddr>) -> Balancer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        let addr = listener.local_addr().expect("its address");
        listener.set_nonblocking(true).expect("non-blocking");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let next = Arc::new(AtomicUsize::new(0));
                let nodes = Arc::new(nodes);
                let accept = async {
                    while let Ok((mut inbound, _)) = listener.accept().await {
                        let (next, nodes) = (next.clone(), nodes.clone());
                        tokio::spawn(async move {
                            let first = next.fetch_add(1, Ordering::Relaxed);
                            for i in 0..nodes.len() {
                                let node = nodes[(first + i) % nodes.len()];
                                if let Ok(mut outbound) = tokio::net::TcpStream::connect(node).await {
                                    let _ = inbound.set_nodelay(true);
                                    let _ = outbound.set_nodelay(true);
                                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                                    return;
                                }
                            }
                        });
                    }
                };
                tokio::select! {
                    () = accept => {}
                    _ = stopped => {}
                }
            });
        });
        Balancer { addr, stop: Some(stop), thread: Some(thread) }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
