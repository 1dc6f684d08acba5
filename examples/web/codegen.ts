// Types every operation in src/operations.graphql from authql's committed
// schema (GraphQL Code Generator's client preset: typed documents), and
// writes the trusted-documents manifest of exactly these operations.
import type { CodegenConfig } from "@graphql-codegen/cli";

const config: CodegenConfig = {
  schema: "../../schema.graphql",
  documents: ["src/operations.graphql"],
  generates: {
    "src/gql/": {
      preset: "client",
      config: { scalars: { DateTime: "string", Upload: "File" }, enumsAsTypes: true },
      // persisted-documents.json: the manifest authql's
      // AUTHQL_TRUSTED_DOCUMENTS loads; each document carries its hash.
      presetConfig: { persistedDocuments: { hashAlgorithm: "sha256" } },
    },
  },
};
export default config;
