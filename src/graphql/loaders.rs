//! DataLoaders, at most one per HTTP request and built on first use: every
//! `User.cars` of one response is fetched by one query, and a request that
//! reads no cars that way (`me` reads them with the user) builds none.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use async_graphql::dataloader::{DataLoader, Loader};
use async_graphql::ErrorExtensions as _;

use crate::domain::account::Car;
use crate::service::AccountService;

pub struct CarLoader {
    accounts: Arc<AccountService>,
}

impl CarLoader {
    pub fn new(accounts: Arc<AccountService>) -> Self {
        Self { accounts }
    }
}

/// The request's [`CarLoader`], made when a field first needs it.
pub struct Loaders {
    accounts: Arc<AccountService>,
    cars: OnceLock<DataLoader<CarLoader>>,
}

impl Loaders {
    pub fn new(accounts: Arc<AccountService>) -> Self {
        Self {
            accounts,
            cars: OnceLock::new(),
        }
    }

    pub fn cars(&self) -> &DataLoader<CarLoader> {
        self.cars
            .get_or_init(|| DataLoader::new(CarLoader::new(self.accounts.clone()), tokio::spawn))
    }
}

impl Loader<i64> for CarLoader {
    type Value = Vec<Car>;
    type Error = async_graphql::Error;

    async fn load(&self, user_ids: &[i64]) -> Result<HashMap<i64, Vec<Car>>, Self::Error> {
        let cars = self
            .accounts
            .cars_of_users(user_ids)
            .await
            .map_err(|e| e.extend())?;
        let mut by_user: HashMap<i64, Vec<Car>> = HashMap::new();
        for car in cars {
            by_user.entry(car.user_id).or_default().push(car);
        }
        Ok(by_user)
    }
}
