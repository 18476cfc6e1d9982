package engine

import (
	"context"
	"errors"
	"fmt"

	"go.uber.org/zap"

	"github.com/certprov/certprov-adapter/internal/config"
	"github.com/certprov/certprov-adapter/internal/csr"
	"github.com/certprov/certprov-adapter/internal/errclass"
	"github.com/certprov/certprov-adapter/internal/journal"
)

// directoryNeeds is which Directory records rec's process needs under r's profile: those its
// templates read, and the record whose org unit its routes go by (the user's for a user
// process, the device's otherwise).
func directoryNeeds(r *resolved, rec *journal.Record) csr.Needs {
	needs := r.profile.Template.Needs()
	if len(r.profile.Routes) > 0 {
		if rec.Process.User != nil {
			needs.User = true
		} else {
			needs.Device = true
		}
	}
	return needs
}

// readDirectory fills data's Directory records that r's profile needs. It reports false when the
// step ends here: the process fails (the adapter may not read the Directory, has no Directory,
// or the Directory has no record the templates read), or the lookup is tried again later. A
// record only the routes read and the Directory does not have stays empty: no route matches.
func (e *Engine) readDirectory(ctx context.Context, r *resolved, rec *journal.Record, data *csr.TemplateData) bool {
	needs := directoryNeeds(r, rec)
	templates := r.profile.Template.Needs()
	p := rec.Process
	if !needs.Any() {
		return true
	}
	if e.o.Directory == nil {
		e.fail(rec, fmt.Sprintf("profile %q uses Directory data, but the certificate adapter does not read the Directory; ask your administrator to enable google.directory", r.profileName))
		return false
	}
	lookup := func(what, key string, forTemplates bool, get func() error) bool {
		err := get()
		if err == nil {
			return true
		}
		if ctx.Err() != nil {
			return false // interrupted: nothing was decided
		}
		var nf interface{ NotFound() bool }
		if errors.As(err, &nf) && nf.NotFound() {
			if forTemplates {
				e.fail(rec, fmt.Sprintf("profile %q describes certificates with the Directory record of the %s, and the Directory has no record of the %s %s; "+
					"ask your administrator whether it is enrolled in this organization (%v)", r.profileName, what, what, key, err))
				return false
			}
			e.log.Info("not in the Directory: no route matches", zap.String("process", rec.Name), zap.String("kind", what), zap.String("key", key))
			return true
		}
		class, hint := errclass.Of(err)
		if class == errclass.Retryable {
			e.retryLater(rec, "reading the Directory", err, hint)
			return false
		}
		var fb interface{ Forbidden() bool }
		if errors.As(err, &fb) && fb.Forbidden() {
			e.fail(rec, fmt.Sprintf("the certificate adapter may not read the Directory record of the %s; ask your administrator to grant it domain-wide delegation of the Directory scopes (%v)", what, err))
			return false
		}
		e.fail(rec, fmt.Sprintf("reading the Directory record of the %s failed: %v", what, err))
		return false
	}
	if needs.Device && p.Device != nil {
		if !lookup("device", p.Device.DirectoryID, templates.Device, func() error {
			d, err := e.o.Directory.Device(ctx, p.Customer, p.Device.DirectoryID)
			if err == nil {
				data.Device.Directory = *d
			}
			return err
		}) {
			return false
		}
	}
	if needs.User && p.User != nil {
		key := p.User.DirectoryID
		if key == "" {
			key = p.User.Email
		}
		if !lookup("user", key, templates.User, func() error {
			u, err := e.o.Directory.User(ctx, p.Customer, key)
			if err == nil {
				data.User.Directory = *u
			}
			return err
		}) {
			return false
		}
	}
	return true
}

// route applies the first of the profile's routes that matches the org unit of rec's subject
// (config.OrgUnitMatches). A subject whose org unit is unknown (not in the Directory) matches
// none. The error is the message to show the user.
func (r *resolved) route(cat *catalog, rec *journal.Record, data csr.TemplateData) error {
	if len(r.profile.Routes) == 0 {
		return nil
	}
	ou := data.Device.Directory.OrgUnitPath
	if rec.Process.User != nil {
		ou = data.User.Directory.OrgUnitPath
	}
	if ou == "" {
		return nil
	}
	for _, rt := range r.profile.Routes {
		if !config.OrgUnitMatches(rt.OrgUnit, ou) {
			continue
		}
		if rt.CAConnection != "" {
			conn := cat.cas[rt.CAConnection]
			if conn == nil {
				return fmt.Errorf("profile %q routes org unit %s to the CA connection %q, which the certificate adapter does not have; ask your administrator to configure it", r.profileName, rt.OrgUnit, rt.CAConnection)
			}
			r.caName, r.ca = rt.CAConnection, conn
		}
		if rt.Validity > 0 {
			r.Validity = rt.Validity
		}
		if rt.TemplateName != "" {
			r.TemplateName = rt.TemplateName
		}
		return nil
	}
	return nil
}
