#!/usr/bin/env bash
# Refresh the GraphiQL playground bundled into the binary (assets/vendor/graphiql).
# authql serves these files itself so the playground works with no internet.
# Usage: scripts/update-graphiql.sh [GRAPHIQL_VERSION] [REACT_VERSION]
# GraphiQL 3.x is the last line that ships a UMD build (graphiql.min.js) usable
# without a bundler; React 18 is the last with UMD builds.
set -euo pipefail
graphiql=${1:-3.9.0}
react=${2:-18.3.1}
here=$(cd "$(dirname "$0")/.." && pwd)
out="$here/assets/vendor/graphiql"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
npm pack --silent "graphiql@$graphiql" "react@$react" "react-dom@$react" >/dev/null
for f in *.tgz; do mkdir "${f%.tgz}"; tar xzf "$f" -C "${f%.tgz}"; done
cp "graphiql-$graphiql/package/graphiql.min.js" "graphiql-$graphiql/package/graphiql.min.css" "$out/"
cp "react-$react/package/umd/react.production.min.js" "$out/"
cp "react-dom-$react/package/umd/react-dom.production.min.js" "$out/"
cp "graphiql-$graphiql/package/LICENSE" "$out/LICENSE.graphiql"
cp "react-$react/package/LICENSE" "$out/LICENSE.react"
printf 'graphiql %s\nreact %s\nreact-dom %s\n' "$graphiql" "$react" "$react" > "$out/VERSIONS"
echo "updated $out; rebuild authql to embed them"
