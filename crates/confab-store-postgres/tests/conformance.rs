//! The store conformance suite against a real PostgreSQL server: one throw-away server
//! for the whole test binary, a fresh database per test.
#![allow(clippy::unwrap_used)]

use confab_engine::ports::Store;
use confab_store_postgres::PostgresStore;
use confab_store_tests::AsStore;
use confab_testkit::TempPostgres;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// The server, started by the first test that needs it (`None`: skipped, see
/// [`TempPostgres::start_or_skip`]). Stopped when the test process exits.
fn server() -> Option<&'static TempPostgres> {
    static SERVER: OnceLock<Option<TempPostgres>> = OnceLock::new();
    SERVER.get_or_init(|| TempPostgres::start_or_skip("the PostgreSQL store conformance suite")).as_ref()
}

/// A store on a database of its own.
struct Fixture(PostgresStore);

impl AsStore for Fixture {
    fn as_store(&self) -> &dyn Store {
        &self.0
    }
}

async fn fixture() -> Option<Fixture> {
    let server = server()?;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let name = format!("conformance_{}", NEXT.fetch_add(1, Ordering::Relaxed));
    let url = server.create_database(&name);
    Some(Fixture(PostgresStore::connect(&url).await.unwrap()))
}

confab_store_tests::store_conformance_tests!({
    match fixture().await {
        Some(f) => f,
        None => return,
    }
});
