package directory

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	admin "google.golang.org/api/admin/directory/v1"

	"github.com/certprov/certprov-adapter/internal/csr"
	"github.com/certprov/certprov-adapter/internal/errclass"
)

// deviceFromAPI is the part of a ChromeOsDevice templates see.
func deviceFromAPI(d *admin.ChromeOsDevice) *csr.DeviceDirectory {
	return &csr.DeviceDirectory{
		DeviceID: d.DeviceId, SerialNumber: d.SerialNumber, Model: d.Model,
		AssetID: d.AnnotatedAssetId, Location: d.AnnotatedLocation, User: d.AnnotatedUser, Notes: d.Notes,
		OrgUnitPath: d.OrgUnitPath, OrgUnitID: d.OrgUnitId,
		MACAddress: d.MacAddress, EthernetMACAddress: d.EthernetMacAddress,
	}
}

// userFromAPI is the part of a User templates see. externalIds is typed interface{} by the
// generated client, so it is decoded here; an answer that does not decode is permanent: the same
// answer will not decode better the next time.
func userFromAPI(u *admin.User) (*csr.UserDirectory, error) {
	out := &csr.UserDirectory{ID: u.Id, PrimaryEmail: u.PrimaryEmail, OrgUnitPath: u.OrgUnitPath,
		ExternalIDs: map[string]string{}, CustomSchemas: map[string]map[string]string{}}
	if u.Name != nil {
		out.GivenName, out.FamilyName, out.FullName = u.Name.GivenName, u.Name.FamilyName, u.Name.FullName
	}
	if u.ExternalIds != nil {
		raw, err := json.Marshal(u.ExternalIds)
		if err != nil {
			return nil, malformed(u.Id, "externalIds", err)
		}
		var ids []admin.UserExternalId
		if err := json.Unmarshal(raw, &ids); err != nil {
			return nil, malformed(u.Id, "externalIds", err)
		}
		for _, id := range ids {
			t := id.Type
			if t == "custom" && id.CustomType != "" {
				t = id.CustomType
			}
			if _, seen := out.ExternalIDs[t]; !seen && t != "" {
				out.ExternalIDs[t] = id.Value
			}
		}
	}
	for schema, raw := range u.CustomSchemas {
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(raw, &fields); err != nil {
			return nil, malformed(u.Id, "customSchemas."+schema, err)
		}
		vals := make(map[string]string, len(fields))
		for name, v := range fields {
			s, err := fieldValue(v)
			if err != nil {
				return nil, malformed(u.Id, "customSchemas."+schema+"."+name, err)
			}
			vals[name] = s
		}
		out.CustomSchemas[schema] = vals
	}
	return out, nil
}

func malformed(user, field string, err error) error {
	return errclass.Mark(fmt.Errorf("users.get %s: decode %s: %w", user, field, err), errclass.Permanent, 0)
}

// fieldValue renders a custom schema field: a string, number or boolean as it is, a multi-valued
// field ([{"type": …, "value": …}, …]) as its values joined with commas.
func fieldValue(raw json.RawMessage) (string, error) {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return "", err
	}
	switch x := v.(type) {
	case nil:
		return "", nil
	case string:
		return x, nil
	case bool:
		return strconv.FormatBool(x), nil
	case float64:
		return strings.TrimSuffix(string(raw), "\n"), nil
	case []any:
		var parts []string
		for _, item := range x {
			m, ok := item.(map[string]any)
			if !ok {
				return "", fmt.Errorf("multi-valued field entry %v: want an object with a value", item)
			}
			b, _ := json.Marshal(m["value"])
			s, err := fieldValue(b)
			if err != nil {
				return "", err
			}
			parts = append(parts, s)
		}
		return strings.Join(slices.DeleteFunc(parts, func(s string) bool { return s == "" }), ","), nil
	}
	return "", fmt.Errorf("value %s: want a string, number, boolean or list of values", raw)
}
