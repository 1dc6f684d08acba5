//! Mutations on the signed-in user's own account, each returning a typed
//! result (see [`super::results`]). All need `Authorization: Bearer`;
//! without a valid access token of a live session they fail with a
//! top-level UNAUTHENTICATED error, like `me`.

use async_graphql::{Context, Object, Result, SimpleObject, Upload, ID};

use super::mutation::services;
use super::results::result_union;
use super::types::{AuthPayload, Car, CarInput, UpdateProfileInput, User};
use super::viewer;
use crate::domain::avatar::UploadedFile;
use crate::domain::Password;

#[derive(Default)]
pub struct AccountMutation;

/// The profile as it is now.
#[derive(SimpleObject)]
pub struct UpdateProfileSuccess {
    pub user: User,
}

/// The car as stored, with its new id.
#[derive(SimpleObject)]
pub struct AddCarSuccess {
    pub car: Car,
}

#[derive(SimpleObject)]
pub struct UpdateCarSuccess {
    pub car: Car,
}

#[derive(SimpleObject)]
pub struct RemoveCarSuccess {
    pub removed_car_id: ID,
}

/// This session's new pair: every other session and every access token
/// issued before the change are refused from now on.
#[derive(SimpleObject)]
pub struct ChangePasswordSuccess {
    pub auth: AuthPayload,
}

#[derive(SimpleObject)]
pub struct RevokeSessionSuccess {
    pub revoked_session_id: ID,
}

#[derive(SimpleObject)]
pub struct SignOutOtherSessionsSuccess {
    /// How many sessions were ended.
    pub revoked_count: i32,
}

/// The user with the new `avatarUrl`.
#[derive(SimpleObject)]
pub struct UploadAvatarSuccess {
    pub user: User,
}

/// The user, `avatarUrl` null.
#[derive(SimpleObject)]
pub struct RemoveAvatarSuccess {
    pub user: User,
}

#[derive(SimpleObject)]
pub struct DeleteAccountSuccess {
    pub deleted_user_id: ID,
}

result_union!(
    /// What `updateProfile` can answer.
    UpdateProfileResult = UpdateProfileSuccess | ValidationFailed | RateLimited
);
result_union!(
    /// What `addCar` can answer.
    AddCarResult = AddCarSuccess | ValidationFailed | RateLimited
);
result_union!(
    /// What `updateCar` can answer.
    UpdateCarResult = UpdateCarSuccess | ValidationFailed | NotFound | RateLimited
);
result_union!(
    /// What `removeCar` can answer.
    RemoveCarResult = RemoveCarSuccess | NotFound | RateLimited
);
result_union!(
    /// What `changePassword` can answer.
    ChangePasswordResult =
        ChangePasswordSuccess | ValidationFailed | InvalidCredentials | RateLimited
);
result_union!(
    /// What `revokeSession` can answer.
    RevokeSessionResult = RevokeSessionSuccess | NotFound | RateLimited
);
result_union!(
    /// What `signOutOtherSessions` can answer.
    SignOutOtherSessionsResult = SignOutOtherSessionsSuccess | RateLimited
);
result_union!(
    /// What `uploadAvatar` can answer.
    UploadAvatarResult = UploadAvatarSuccess | ValidationFailed | RateLimited
);
result_union!(
    /// What `removeAvatar` can answer.
    RemoveAvatarResult = RemoveAvatarSuccess | RateLimited
);
result_union!(
    /// What `deleteAccount` can answer.
    DeleteAccountResult = DeleteAccountSuccess | ValidationFailed | InvalidCredentials | RateLimited
);

#[Object]
impl AccountMutation {
    /// Change e-mail, phone or names: an absent field stays, null clears
    /// it. The sign-up rules apply; an e-mail in use is TAKEN.
    async fn update_profile(
        &self,
        ctx: &Context<'_>,
        input: UpdateProfileInput,
    ) -> Result<UpdateProfileResult> {
        let (accounts, client) = services(ctx)?;
        let result = accounts
            .update_profile(viewer(ctx), input.into(), &client)
            .await
            .map(|user| UpdateProfileSuccess {
                user: User::new(user, None, viewer(ctx).session_id().map(str::to_owned)),
            });
        UpdateProfileResult::from_result(result)
    }

    /// Register one more car (at most 20 in all), after the others.
    async fn add_car(&self, ctx: &Context<'_>, input: CarInput) -> Result<AddCarResult> {
        let (accounts, client) = services(ctx)?;
        let result = accounts
            .add_car(viewer(ctx), input.into(), &client)
            .await
            .map(|car| AddCarSuccess { car: car.into() });
        AddCarResult::from_result(result)
    }

    /// Replace the details of one of the user's cars.
    async fn update_car(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: CarInput,
    ) -> Result<UpdateCarResult> {
        let (accounts, client) = services(ctx)?;
        let result = accounts
            .update_car(viewer(ctx), &id, input.into(), &client)
            .await
            .map(|car| UpdateCarSuccess { car: car.into() });
        UpdateCarResult::from_result(result)
    }

    /// Remove one of the user's cars; the others keep their order.
    async fn remove_car(&self, ctx: &Context<'_>, id: ID) -> Result<RemoveCarResult> {
        let (accounts, client) = services(ctx)?;
        let result = accounts
            .remove_car(viewer(ctx), &id, &client)
            .await
            .map(|id| RemoveCarSuccess {
                removed_car_id: ID(id.to_string()),
            });
        RemoveCarResult::from_result(result)
    }

    /// Change the password. The current one is checked like a sign-in
    /// (same limits); the new one must pass the sign-up rules. Every other
    /// session ends; this one goes on with the pair returned.
    async fn change_password(
        &self,
        ctx: &Context<'_>,
        current_password: String,
        new_password: String,
    ) -> Result<ChangePasswordResult> {
        let (accounts, client) = services(ctx)?;
        let result = accounts
            .change_password(
                viewer(ctx),
                Password::new(current_password),
                Password::new(new_password),
                &client,
            )
            .await;
        let result = match result {
            Ok(signed_in) => Ok(ChangePasswordSuccess {
                auth: super::session::payload(ctx, signed_in)?,
            }),
            Err(e) => Err(e),
        };
        ChangePasswordResult::from_result(result)
    }

    /// End one of the user's sessions (see `me { sessions { id } }`): its
    /// refresh token and access tokens stop at once.
    async fn revoke_session(&self, ctx: &Context<'_>, id: ID) -> Result<RevokeSessionResult> {
        let (accounts, client) = services(ctx)?;
        let result = accounts
            .revoke_session(viewer(ctx), &id, &client)
            .await
            .map(|id| RevokeSessionSuccess {
                revoked_session_id: ID(id),
            });
        RevokeSessionResult::from_result(result)
    }

    /// End every session of the user but this one.
    async fn sign_out_other_sessions(
        &self,
        ctx: &Context<'_>,
    ) -> Result<SignOutOtherSessionsResult> {
        let (accounts, client) = services(ctx)?;
        let result = accounts
            .sign_out_other_sessions(viewer(ctx), &client)
            .await
            .map(|revoked| SignOutOtherSessionsSuccess {
                revoked_count: i32::try_from(revoked).unwrap_or(i32::MAX),
            });
        SignOutOtherSessionsResult::from_result(result)
    }

    /// Upload an avatar (GraphQL multipart request): a PNG, JPEG or WebP
    /// of at most 5 MiB and 4096x4096 pixels, re-encoded without metadata.
    async fn upload_avatar(&self, ctx: &Context<'_>, file: Upload) -> Result<UploadAvatarResult> {
        let (accounts, client) = services(ctx)?;
        // No such part in the request (e.g. a JSON request): no file,
        // which the rules refuse after the caller is checked.
        let file = match file.value(ctx) {
            Ok(upload) => UploadedFile {
                filename: upload.filename,
                content_type: upload.content_type,
                bytes: upload.content.to_vec(),
            },
            Err(_) => UploadedFile {
                filename: String::new(),
                content_type: None,
                bytes: Vec::new(),
            },
        };
        let result = accounts
            .upload_avatar(viewer(ctx), file, &client)
            .await
            .map(|user| UploadAvatarSuccess {
                user: User::new(user, None, viewer(ctx).session_id().map(str::to_owned)),
            });
        UploadAvatarResult::from_result(result)
    }

    /// Remove the avatar (succeeds when there is none, too).
    async fn remove_avatar(&self, ctx: &Context<'_>) -> Result<RemoveAvatarResult> {
        let (accounts, client) = services(ctx)?;
        let result = accounts
            .remove_avatar(viewer(ctx), &client)
            .await
            .map(|user| RemoveAvatarSuccess {
                user: User::new(user, None, viewer(ctx).session_id().map(str::to_owned)),
            });
        RemoveAvatarResult::from_result(result)
    }

    /// Delete the account with its cars, sessions and avatar, after
    /// checking the password like a sign-in. The username and e-mail are
    /// free again at once.
    async fn delete_account(
        &self,
        ctx: &Context<'_>,
        password: String,
    ) -> Result<DeleteAccountResult> {
        let (accounts, client) = services(ctx)?;
        let result = accounts
            .delete_account(viewer(ctx), Password::new(password), &client)
            .await
            .map(|id| DeleteAccountSuccess {
                deleted_user_id: ID(id.to_string()),
            });
        DeleteAccountResult::from_result(result)
    }
}
