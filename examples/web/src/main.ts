// The example web app. The access token lives in memory only; the refresh
// token lives in authql's HttpOnly cookie, which this code never sees:
// a reload signs in again silently through `refreshSession`.
import type { TypedDocumentNode } from "@graphql-typed-document-node/core";
import {
  MeDocument,
  RefreshSessionDocument,
  SignInDocument,
  SignOutDocument,
  SignUpDocument,
} from "./gql/graphql";

/** authql's /graphql, from `?api=` (the app is served from another origin). */
const api = new URLSearchParams(location.search).get("api") ?? "http://127.0.0.1:8080/graphql";
let accessToken: string | null = null;

async function call<R, V>(document: TypedDocumentNode<R, V>, variables?: V): Promise<R> {
  const headers: Record<string, string> = {
    "content-type": "application/json",
    // authql's CSRF check for requests the cookie authenticates.
    "x-requested-with": "authql-example",
  };
  if (accessToken) headers.authorization = `Bearer ${accessToken}`;
  const response = await fetch(api, {
    method: "POST",
    credentials: "include",
    headers,
    // The document by its id in the manifest codegen wrote
    // (src/gql/persisted-documents.json): authql runs it from there, and
    // with AUTHQL_TRUSTED_DOCUMENTS_ONLY runs nothing else.
    body: JSON.stringify({ documentId: `sha256:${(document as { __meta__?: { hash: string } }).__meta__?.hash}`, variables }),
  });
  const body = await response.json();
  if (body.errors?.length) throw new Error(`${body.errors[0].extensions?.code}: ${body.errors[0].message}`);
  return body.data as R;
}

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

async function show(): Promise<void> {
  const { me } = await call(MeDocument);
  $("hello").textContent = `Hello, ${me.username}`;
  $("cars").replaceChildren(
    ...me.cars.map((car) => {
      const li = document.createElement("li");
      li.textContent = `${car.brand} ${car.model}${car.year ? ` (${car.year})` : ""}`;
      return li;
    }),
  );
  $("sessions").replaceChildren(
    ...me.sessions.map((s) => {
      const li = document.createElement("li");
      li.textContent = `${s.current ? "this browser" : "elsewhere"}: ${s.userAgent ?? "unknown"}`;
      return li;
    }),
  );
  $("signed-in").hidden = false;
  $("signed-out").hidden = true;
  $("status").textContent = "Signed in";
}

function signedOut(message = "Signed out"): void {
  accessToken = null;
  $("signed-in").hidden = true;
  $("signed-out").hidden = false;
  $("status").textContent = message;
}

/** On load: the cookie, if any, gives a new access token. */
async function restore(): Promise<void> {
  const { refreshSession } = await call(RefreshSessionDocument);
  switch (refreshSession.__typename) {
    case "RefreshSessionSuccess":
      accessToken = refreshSession.auth.accessToken;
      // Cookie-only mode: the JSON never carries the refresh token.
      (window as unknown as { lastRefreshToken: string }).lastRefreshToken =
        refreshSession.auth.refreshToken;
      await show();
      break;
    default:
      signedOut();
  }
}

$("auth").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target as HTMLFormElement;
  const data = new FormData(form);
  const action = (event as SubmitEvent).submitter?.getAttribute("value");
  const username = String(data.get("username"));
  const password = String(data.get("password"));
  try {
    if (action === "signUp") {
      const brand = String(data.get("brand") ?? "");
      const model = String(data.get("model") ?? "");
      const cars = brand && model ? [{ brand, model }] : [];
      const { signUp } = await call(SignUpDocument, { input: { username, password, cars } });
      accessToken = signUp.accessToken;
    } else {
      const { createToken } = await call(SignInDocument, { input: { login: username, password } });
      accessToken = createToken.accessToken;
    }
    $("error").textContent = "";
    await show();
  } catch (e) {
    $("error").textContent = String((e as Error).message);
  }
});

$("sign-out").addEventListener("click", async () => {
  const { signOut } = await call(SignOutDocument);
  switch (signOut.__typename) {
    case "SignOutSuccess":
      signedOut();
      break;
    default:
      // The cookie is gone from this browser either way; the session ends
      // with its lifetime if the server could not end it now.
      signedOut(`Signed out here (${signOut.message})`);
  }
});

restore().catch((e) => signedOut(`Signed out (${(e as Error).message})`));
