package vault

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
	"go.uber.org/zap"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/logging"
	"github.com/certprov/certprov-adapter/internal/suggest"
)

const (
	// renewFraction of a token's TTL passes before it is renewed, as Vault's own agent does
	// (about two thirds), leaving a third of it to ride out a Vault that is briefly away.
	renewNum, renewDen = 2, 3
	// expiryMargin: a token this close to its end is not used any more; a request in flight
	// could arrive after it expired.
	expiryMargin = 5 * time.Second
	// renewRetry paces the background renewal after a failure.
	renewRetry = 10 * time.Second
	// renewTimeout bounds one background renewal or login.
	renewTimeout = 30 * time.Second
)

// checkAuth checks the auth block and applies its defaults. Problems are *ca.SettingError
// relative to the block ("method", "tokenFile").
func checkAuth(a *authSettings) error {
	var errs []error
	only := func(key, v string, methods string) {
		if v != "" {
			errs = append(errs, ca.SettingErrorf(key, "only with method %s", methods))
		}
	}
	switch a.Method {
	case MethodToken:
		if a.TokenFile == "" {
			errs = append(errs, ca.SettingErrorf("tokenFile", "required with method token (a file holding the Vault token, e.g. written by Vault Agent)"))
		}
		only("mount", a.Mount, "approle or kubernetes")
		only("roleID", a.RoleID, MethodAppRole)
		only("roleIDFile", a.RoleIDFile, MethodAppRole)
		only("secretIDFile", a.SecretIDFile, MethodAppRole)
		only("role", a.Role, MethodKubernetes)
		only("jwtFile", a.JWTFile, MethodKubernetes)
	case MethodAppRole:
		switch {
		case a.RoleID != "" && a.RoleIDFile != "":
			errs = append(errs, ca.SettingErrorf("roleID", "roleID and roleIDFile: set only one"))
		case a.RoleID == "" && a.RoleIDFile == "":
			errs = append(errs, ca.SettingErrorf("roleID", "roleID or roleIDFile: one is required with method approle (vault read auth/approle/role/NAME/role-id)"))
		}
		only("tokenFile", a.TokenFile, MethodToken)
		only("role", a.Role, MethodKubernetes)
		only("jwtFile", a.JWTFile, MethodKubernetes)
	case MethodKubernetes:
		if a.Role == "" {
			errs = append(errs, ca.SettingErrorf("role", "required with method kubernetes (the Vault role bound to the adapter's service account)"))
		}
		if a.JWTFile == "" {
			a.JWTFile = DefaultJWTFile
		}
		only("tokenFile", a.TokenFile, MethodToken)
		only("roleID", a.RoleID, MethodAppRole)
		only("roleIDFile", a.RoleIDFile, MethodAppRole)
		only("secretIDFile", a.SecretIDFile, MethodAppRole)
	case "":
		errs = append(errs, ca.SettingErrorf("method", "required: %s, %s or %s", MethodToken, MethodAppRole, MethodKubernetes))
	default:
		errs = append(errs, ca.SettingErrorf("method", "%q: must be %s, %s or %s%s", a.Method, MethodToken, MethodAppRole, MethodKubernetes,
			didYouMean(a.Method, MethodToken, MethodAppRole, MethodKubernetes)))
	}
	if a.Method == MethodAppRole || a.Method == MethodKubernetes {
		if a.Mount == "" {
			a.Mount = a.Method
		}
		var err error
		if a.Mount, err = cleanPath("mount", a.Mount); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// didYouMean is "; did you mean X?" for the candidate closest to v, or "".
func didYouMean(v string, candidates ...string) string {
	if s := suggest.Closest(v, candidates); s != "" {
		return fmt.Sprintf("; did you mean %q?", s)
	}
	return ""
}

// authFiles are the resolved paths of the auth block's files.
type authFiles struct {
	token, roleID, secretID, jwt string
}

// readAuthFiles resolves the auth block's files and reads each once, so that a wrong path or
// an empty file stops the adapter at startup. The contents are read again at every login: the
// files rotate (a Kubernetes projected token, a Vault Agent sink).
func readAuthFiles(a authSettings, env ca.Env) (authFiles, error) {
	f := authFiles{
		token:    env.Path(a.TokenFile),
		roleID:   env.Path(a.RoleIDFile),
		secretID: env.Path(a.SecretIDFile),
		jwt:      env.Path(a.JWTFile),
	}
	var errs []error
	for _, x := range []struct{ key, setting, path string }{
		{"auth.tokenFile", a.TokenFile, f.token},
		{"auth.roleIDFile", a.RoleIDFile, f.roleID},
		{"auth.secretIDFile", a.SecretIDFile, f.secretID},
		{"auth.jwtFile", a.JWTFile, f.jwt},
	} {
		if x.path == "" {
			continue
		}
		if _, err := readCredential(x.path); err != nil {
			errs = append(errs, ca.SettingErrorf(x.key, "%q: %w", x.setting, err))
		}
	}
	return f, errors.Join(errs...)
}

// readCredential reads a file holding one credential; surrounding white space (an editor's
// final newline) is not part of it.
func readCredential(path string) (logging.Secret, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		var perr *os.PathError
		if errors.As(err, &perr) {
			err = perr.Err // the path is named by the caller
		}
		return "", err
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", errors.New("the file is empty")
	}
	return logging.Secret(s), nil
}

// token is a Vault token and what Vault said of its lifetime.
type token struct {
	value     logging.Secret
	obtained  time.Time     // when Vault last stated its TTL
	ttl       time.Duration // 0: the token does not expire
	increment time.Duration // what a renewal asks for: the TTL the token was created with
	renewable bool
	refused   atomic.Bool // Vault answered 403 to it: obtain another before the next call
}

func (t *token) renewAt() time.Time {
	return t.obtained.Add(t.ttl * renewNum / renewDen)
}

func (t *token) expired(now time.Time) bool {
	return t.ttl > 0 && !now.Before(t.obtained.Add(t.ttl-expiryMargin))
}

// authenticator keeps the connector's token valid. It obtains one (reads the token file, or logs
// in with AppRole or Kubernetes), renews it once two thirds of its TTL have passed (on use, and
// in the background so that an idle adapter keeps a token it cannot obtain again), and obtains a
// new one when renewal can extend it no further or Vault refused it. It is safe for concurrent
// use: one refresh runs at a time, and waiters give up with their context.
type authenticator struct {
	method    string
	loginPath string // auth/<mount>/login
	roleID    string // an inline AppRole role_id
	role      string // the Kubernetes role
	files     authFiles
	base      *vaultapi.Client
	name      string // the connection, for logs
	label     string // the connection, for messages
	log       *zap.Logger

	now   func() time.Time
	after func(time.Duration) <-chan time.Time // the background renewal's timer

	lock chan struct{}
	cur  atomic.Pointer[token]

	loopCtx   context.Context
	stopLoop  context.CancelFunc
	startOnce sync.Once
	started   atomic.Bool
	done      chan struct{}
}

func newAuthenticator(s authSettings, files authFiles, base *vaultapi.Client, name, label string, log *zap.Logger) *authenticator {
	ctx, cancel := context.WithCancel(context.Background())
	a := &authenticator{
		method:   s.Method,
		roleID:   s.RoleID,
		role:     s.Role,
		files:    files,
		base:     base,
		name:     name,
		label:    label,
		log:      log,
		now:      time.Now,
		after:    time.After,
		lock:     make(chan struct{}, 1),
		loopCtx:  ctx,
		stopLoop: cancel,
		done:     make(chan struct{}),
	}
	if s.Method != MethodToken {
		a.loginPath = "auth/" + s.Mount + "/login"
	}
	return a
}

// current returns a token that is not due for renewal, refreshing first when needed.
func (a *authenticator) current(ctx context.Context) (*token, error) {
	if t := a.cur.Load(); t != nil && !t.refused.Load() && (t.ttl == 0 || a.now().Before(t.renewAt())) {
		return t, nil
	}
	return a.refresh(ctx)
}

// refuse records that Vault refused t (HTTP 403): it may have been revoked, or have expired
// sooner than it said. The next current obtains another.
func (a *authenticator) refuse(t *token) { t.refused.Store(true) }

// refresh renews the current token or obtains a new one, whichever applies.
func (a *authenticator) refresh(ctx context.Context) (*token, error) {
	select {
	case a.lock <- struct{}{}:
	case <-ctx.Done():
		return nil, ca.Retryable(fmt.Errorf("%s: wait for the token: %w", a.label, ctx.Err()), 0)
	}
	defer func() { <-a.lock }()
	now := a.now()
	cur := a.cur.Load()
	usable := cur != nil && !cur.refused.Load() && !cur.expired(now)
	if usable && (cur.ttl == 0 || now.Before(cur.renewAt())) {
		return cur, nil // refreshed while this call waited
	}
	if usable && cur.renewable {
		t, err := a.renew(ctx, cur)
		if err == nil {
			a.store(t)
			return t, nil
		}
		a.log.Warn("vault token renewal failed", zap.String("connector", a.name), zap.Error(err))
		if ctx.Err() != nil {
			return nil, err
		}
	}
	t, err := a.obtain(ctx)
	if err != nil {
		if usable {
			// Still valid for a while: a Vault that is briefly away must not stop issuance.
			a.log.Warn("vault token not replaced; using it until it expires", zap.String("connector", a.name),
				zap.Time("expires", cur.obtained.Add(cur.ttl)), zap.Error(err))
			return cur, nil
		}
		return nil, err
	}
	a.store(t)
	return t, nil
}

func (a *authenticator) store(t *token) {
	a.cur.Store(t)
	if t.ttl > 0 {
		a.startOnce.Do(func() {
			a.started.Store(true)
			go a.renewLoop()
		})
	}
}

// renew extends t with renew-self. A renewal that extends nothing (the token reached its max
// TTL) leaves it unrenewable, so that the next refresh obtains a new token instead.
func (a *authenticator) renew(ctx context.Context, t *token) (*token, error) {
	now := a.now()
	sec, ex, err := a.send(ctx, t, func(ctx context.Context, cl *vaultapi.Client) (*vaultapi.Secret, error) {
		return cl.Auth().Token().RenewSelfWithContext(ctx, int(t.increment/time.Second))
	})
	if err != nil {
		return nil, classify(a.label, "renew the token (auth/token/renew-self)", err, ex.retryAfter)
	}
	if sec == nil || sec.Auth == nil {
		return nil, ca.Retryable(fmt.Errorf("%s: renew the token: the answer has no auth block", a.label), 0)
	}
	ttl := time.Duration(sec.Auth.LeaseDuration) * time.Second
	n := &token{value: t.value, obtained: now, ttl: ttl, increment: t.increment, renewable: sec.Auth.Renewable}
	if left := t.obtained.Add(t.ttl).Sub(now); ttl <= left {
		n.renewable = false
	}
	if sec.Auth.ClientToken != "" && sec.Auth.ClientToken != t.value.Reveal() {
		n.value = logging.Secret(sec.Auth.ClientToken)
	}
	a.log.Debug("vault token renewed", zap.String("connector", a.name), zap.Duration("ttl", ttl), zap.Bool("renewable", n.renewable))
	return n, nil
}

// obtain gets a fresh token: the token file's, or one from a login.
func (a *authenticator) obtain(ctx context.Context) (*token, error) {
	if a.method == MethodToken {
		return a.readTokenFile(ctx)
	}
	return a.login(ctx)
}

// readTokenFile reads the token file and asks Vault the token's TTL (lookup-self, which the
// default policy allows). A token Vault does not let look itself up is used as it is, without
// renewal.
func (a *authenticator) readTokenFile(ctx context.Context) (*token, error) {
	v, err := readCredential(a.files.token)
	if err != nil {
		return nil, ca.Permanentf("%s: auth.tokenFile: %w", a.label, err)
	}
	t := &token{value: v, obtained: a.now()}
	sec, ex, err := a.send(ctx, t, func(ctx context.Context, cl *vaultapi.Client) (*vaultapi.Secret, error) {
		return cl.Auth().Token().LookupSelfWithContext(ctx)
	})
	var rerr *vaultapi.ResponseError
	switch {
	case errors.As(err, &rerr) && rerr.StatusCode == 403:
		// Either the token is not valid, or its policies lack lookup-self; the next call
		// tells which.
		a.log.Warn("vault token from tokenFile cannot look itself up; it is used without renewal",
			zap.String("connector", a.name), zap.String("vault", strings.Join(rerr.Errors, "; ")))
		return t, nil
	case err != nil:
		return nil, classify(a.label, "look up the token in auth.tokenFile (auth/token/lookup-self)", err, ex.retryAfter, v.Reveal())
	}
	ttl, err := sec.TokenTTL()
	if err != nil {
		return nil, ca.Retryable(fmt.Errorf("%s: look up the token: %w", a.label, err), 0)
	}
	renewable, _ := sec.TokenIsRenewable()
	t.ttl, t.renewable, t.increment = ttl, renewable, ttl
	// lookup-self tells the TTL left; a renewal asks for the whole TTL the token was made with.
	if n, ok := sec.Data["creation_ttl"].(json.Number); ok {
		if secs, err := n.Int64(); err == nil && secs > 0 {
			t.increment = time.Duration(secs) * time.Second
		}
	}
	return t, nil
}

// login logs in with AppRole or Kubernetes, reading the credentials again (they rotate).
func (a *authenticator) login(ctx context.Context) (*token, error) {
	data := map[string]any{}
	what := ""
	switch a.method {
	case MethodAppRole:
		what = "AppRole login"
		roleID := logging.Secret(a.roleID)
		if a.files.roleID != "" {
			v, err := readCredential(a.files.roleID)
			if err != nil {
				return nil, ca.Permanentf("%s: auth.roleIDFile: %w", a.label, err)
			}
			roleID = v
		}
		data["role_id"] = roleID.Reveal()
		if a.files.secretID != "" {
			v, err := readCredential(a.files.secretID)
			if err != nil {
				return nil, ca.Permanentf("%s: auth.secretIDFile: %w", a.label, err)
			}
			data["secret_id"] = v.Reveal()
		}
	case MethodKubernetes:
		what = "Kubernetes login"
		jwt, err := readCredential(a.files.jwt)
		if err != nil {
			return nil, ca.Permanentf("%s: auth.jwtFile: %w", a.label, err)
		}
		data["role"] = a.role
		data["jwt"] = jwt.Reveal()
	}
	now := a.now()
	sec, ex, err := a.send(ctx, &token{}, func(ctx context.Context, cl *vaultapi.Client) (*vaultapi.Secret, error) {
		return cl.Logical().WriteWithContext(ctx, a.loginPath, data)
	})
	if err != nil {
		var secrets []string
		for _, k := range []string{"role_id", "secret_id", "jwt"} {
			if v, ok := data[k].(string); ok {
				secrets = append(secrets, v)
			}
		}
		return nil, classify(a.label, what+" at "+a.loginPath, err, ex.retryAfter, secrets...)
	}
	if sec == nil || sec.Auth == nil || sec.Auth.ClientToken == "" {
		return nil, ca.Permanentf("%s: %s (%s): the answer holds no token (is auth.mount a %s auth method?)", a.label, what, a.loginPath, a.method)
	}
	a.log.Info("logged in to vault", zap.String("connector", a.name), zap.String("method", a.method),
		zap.Duration("ttl", time.Duration(sec.Auth.LeaseDuration)*time.Second), zap.Strings("policies", sec.Auth.TokenPolicies))
	ttl := time.Duration(sec.Auth.LeaseDuration) * time.Second
	return &token{
		value:     logging.Secret(sec.Auth.ClientToken),
		obtained:  now,
		ttl:       ttl,
		increment: ttl,
		renewable: sec.Auth.Renewable,
	}, nil
}

// send runs fn with a client that sends t's token (none when t holds none) and reports whether
// a request reached Vault and the Retry-After of its answer.
func (a *authenticator) send(ctx context.Context, t *token, fn func(context.Context, *vaultapi.Client) (*vaultapi.Secret, error)) (*vaultapi.Secret, exchange, error) {
	return send(ctx, a.base, t.value.Reveal(), fn)
}

// renewLoop renews the token in the background, so that a token the adapter cannot obtain again
// (from a token file) survives an idle adapter, and a login token is fresh when a request comes.
func (a *authenticator) renewLoop() {
	defer close(a.done)
	wait := time.Duration(0)
	for {
		if t := a.cur.Load(); wait == 0 && t != nil && t.ttl > 0 {
			if wait = t.renewAt().Sub(a.now()); wait <= 0 {
				wait = renewRetry // due, but could not be replaced: it is used until it expires
			}
		} else if wait == 0 {
			wait = time.Hour
		}
		select {
		case <-a.loopCtx.Done():
			return
		case <-a.after(wait):
		}
		ctx, cancel := context.WithTimeout(a.loopCtx, renewTimeout)
		_, err := a.refresh(ctx)
		cancel()
		wait = 0
		if err != nil {
			if a.loopCtx.Err() != nil {
				return
			}
			a.log.Warn("vault token refresh failed; retrying", zap.String("connector", a.name), zap.Error(err))
			wait = renewRetry
		}
	}
}

// close stops the background renewal and waits for it.
func (a *authenticator) close() {
	a.stopLoop()
	if a.started.Load() {
		<-a.done
	}
}
