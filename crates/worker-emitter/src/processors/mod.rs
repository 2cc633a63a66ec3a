//! The four built-in processors, one per queue of `docs/reference.md`, "Job queues".

pub mod inventory;
pub mod listings;
pub mod orders;
pub mod pricing;

pub use inventory::Inventory;
pub use listings::Listings;
pub use orders::Orders;
pub use pricing::Pricing;
