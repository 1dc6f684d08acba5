// Mounts GraphiQL against this server's /graphql. Kept in its own file so the
// page needs no inline script (Content-Security-Policy: script-src 'self').
(function () {
  var fetcher = GraphiQL.createFetcher({ url: new URL('/graphql', window.location.href).toString() });
  var defaultQuery = [
    '# Welcome to authql. Sign up, then put the accessToken into the',
    '# Headers tab as {"Authorization": "Bearer <accessToken>"} and run `me`.',
    '',
    'mutation SignUp {',
    '  signUp(input: {username: "ivan", password: "a long passphrase"}) {',
    '    accessToken refreshToken expiresIn',
    '    user { id username createdAt cars { brand model } }',
    '  }',
    '}',
    '',
    'query Me {',
    '  me { id username email cars { brand model year } }',
    '}',
    ''
  ].join('\n');
  var root = ReactDOM.createRoot(document.getElementById('graphiql'));
  root.render(React.createElement(GraphiQL, { fetcher: fetcher, defaultQuery: defaultQuery }));
})();
