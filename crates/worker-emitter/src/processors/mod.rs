//! The four built-in processors, one per queue of CONTRACT §6.

pub mod inventory;
pub mod listings;
pub mod orders;
pub mod pricing;

pub use inventory::Inventory;
pub use listings::Listings;
pub use orders::Orders;
pub use pricing::Pricing;

/// Prices equal to the cent's hundredth are equal (they arrive as JSON numbers).
pub(crate) fn same_price(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6
}
