// Mounts GraphiQL against this server's /graphql. Kept in its own file so the
// page needs no inline script (Content-Security-Policy: script-src 'self').
(function () {
  var fetch = GraphiQL.createFetcher({ url: new URL('/graphql', window.location.href).toString() });

  // GraphiQL learns the document's operations 100 ms after the last
  // keystroke; a Run (button or Ctrl-Enter) sooner than that sends the
  // operation name of the document as it was before (e.g. "SignUp" with a
  // freshly typed `{ __typename }`), which the server rightly refuses.
  // An operation name the document being sent does not define is dropped,
  // so the server runs the document's only operation.
  function defines(query, name) {
    var escaped = name.replace(/[$]/g, '\\$');
    return new RegExp('(^|[^\\w$])(query|mutation|subscription)\\s+' + escaped + '(?![\\w$])').test(query);
  }
  function fetcher(params, options) {
    if (params && params.operationName && typeof params.query === 'string' &&
        !defines(params.query, params.operationName)) {
      params = Object.assign({}, params);
      delete params.operationName;
    }
    return fetch(params, options);
  }

  // One operation: with two, a Run pressed while GraphiQL still knows the
  // old document opens its "which operation?" menu instead of running.
  var defaultQuery = [
    '# Welcome to authql. Run this to sign up, put the accessToken into the',
    '# Headers tab as {"Authorization": "Bearer <accessToken>"}, then run',
    '#   { me { id username email cars { brand model year } } }',
    '',
    'mutation SignUp {',
    '  signUp(input: {username: "ivan", password: "a long passphrase"}) {',
    '    accessToken refreshToken expiresIn',
    '    user { id username createdAt cars { brand model } }',
    '  }',
    '}',
    ''
  ].join('\n');
  var root = ReactDOM.createRoot(document.getElementById('graphiql'));
  root.render(React.createElement(GraphiQL, { fetcher: fetcher, defaultQuery: defaultQuery }));
})();
