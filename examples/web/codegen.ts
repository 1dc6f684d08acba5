// Types every operation in src/operations.graphql from authql's committed
// schema (GraphQL Code Generator's client preset: typed documents).
import type { CodegenConfig } from "@graphql-codegen/cli";

const config: CodegenConfig = {
  schema: "../../schema.graphql",
  documents: ["src/operations.graphql"],
  generates: {
    "src/gql/": {
      preset: "client",
      config: { scalars: { DateTime: "string", Upload: "File" }, enumsAsTypes: true },
    },
  },
};
export default config;
