package pubsubsetup

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/certprov/certprov-adapter/internal/chromeapi"
)

// Step is one thing setup cannot do, for the operator to do by hand.
type Step struct {
	Title string `json:"title"`
	// Commands to run, in order; empty for a step in the Admin console.
	Commands []string `json:"commands,omitempty"`
	Detail   string   `json:"detail,omitempty"`
}

// StepsOptions are what the hand steps are written for.
type StepsOptions struct {
	Settings Settings
	// Profiles and CAConnections are the configured names the Admin console's references must
	// match (profiles, caConnections).
	Profiles, CAConnections []string
	// Topic is the subscription's topic (Report.Topic).
	Topic string
	// ServiceAccount is the adapter's service account e-mail, and ClientID its OAuth client
	// id, when known (from its key file); the steps then name them instead of a placeholder.
	ServiceAccount, ClientID string
	// ConfigPath is the configuration file, for the doctor command at the end.
	ConfigPath string
}

// pubsubAgent is the Pub/Sub service agent of the subscription's project, which moves
// dead-lettered messages: it needs the project's number, which only the Resource Manager API
// knows, so the steps have gcloud look it up.
const pubsubAgent = "service-${PROJECT_NUMBER}@gcp-sa-pubsub.iam.gserviceaccount.com"

// HandSteps lists what is left to do after setup: the IAM bindings (setup asks for the least
// permissions it can and grants nothing) and the Admin console's side, saying only what
// Google documents and marking what it does not.
func HandSteps(o StepsOptions) []Step {
	s := o.Settings
	subProject, subID := splitName(s.Subscription)
	sa := o.ServiceAccount
	saDetail := ""
	if sa == "" {
		sa = "SERVICE_ACCOUNT_EMAIL"
		saDetail = "SERVICE_ACCOUNT_EMAIL is the adapter's service account (with google.credentials.type adc: the one its environment provides, e.g. the Google service account of its Workload Identity). "
	}
	steps := []Step{{
		Title: "Let the adapter pull from the subscription (roles/pubsub.subscriber)",
		Commands: []string{fmt.Sprintf("gcloud pubsub subscriptions add-iam-policy-binding %s --project %s --member serviceAccount:%s --role roles/pubsub.subscriber",
			subID, subProject, sa)},
		Detail: saDetail + "doctor checks it (pubsub.permissions).",
	}}
	if s.DeadLetterTopic != "" {
		dlProject, dlID := splitName(s.DeadLetterTopic)
		steps = append(steps, Step{
			Title: "Let Pub/Sub's service agent move undeliverable notifications to the dead-letter topic",
			Commands: []string{
				fmt.Sprintf("PROJECT_NUMBER=$(gcloud projects describe %s --format 'value(projectNumber)')", subProject),
				fmt.Sprintf("gcloud pubsub topics add-iam-policy-binding %s --project %s --member serviceAccount:%s --role roles/pubsub.publisher", dlID, dlProject, pubsubAgent),
				fmt.Sprintf("gcloud pubsub subscriptions add-iam-policy-binding %s --project %s --member serviceAccount:%s --role roles/pubsub.subscriber", subID, subProject, pubsubAgent),
			},
			Detail: "Without both, Pub/Sub cannot dead-letter and keeps redelivering. Watch the backlog of " +
				DeadLetterSubscription(s.DeadLetterTopic) + ": each message names a process that was never claimed.",
		})
	}
	steps = append(steps,
		Step{
			Title:    "Enable the Certificate Provisioning API (part of the Chrome Management API) in the service account's project",
			Commands: []string{fmt.Sprintf("gcloud services enable chromemanagement.googleapis.com --project %s", subProject)},
		},
		Step{
			Title: "Authorise the service account for the provisioning scope (Admin console)",
			Detail: fmt.Sprintf("Google does not document how the scope is granted; the grant doctor recommends when Google answers 403 is domain-wide delegation: "+
				"Security > Access and data control > API controls > Manage Domain Wide Delegation > Add new, client ID %s, OAuth scope %s.",
				cmp.Or(o.ClientID, "(the service account's uniqueId)"), chromeapi.Scope),
		},
		Step{
			Title: "Name the topic in the Admin console's certificate provisioning settings",
			Detail: fmt.Sprintf("Google publishes one message to %s for every new process. Which Google identity publishes is not documented, so nothing here grants it; "+
				"if no message arrives, grant the publisher Google's Admin console help names roles/pubsub.publisher on the topic.", cmp.Or(o.Topic, "the subscription's topic")),
		},
		Step{
			Title:  "Point each certificate profile at this adapter (Admin console)",
			Detail: profilesDetail(o.Profiles, o.CAConnections),
		},
		Step{
			Title:    "Check everything from the adapter's side",
			Commands: []string{"certprov-adapter doctor --config " + cmp.Or(o.ConfigPath, "FILE")},
		},
	)
	return steps
}

// profilesDetail says which names the Admin console's references must carry.
func profilesDetail(profiles, caConnections []string) string {
	list := func(names []string) string {
		if len(names) == 0 {
			return "(none configured)"
		}
		return strings.Join(slices.Sorted(slices.Values(names)), ", ")
	}
	return fmt.Sprintf("Its adapter configuration reference (profileAdapterConfigReference) must be one of the configured profiles: %s; "+
		"its CA connection's (caConnectionAdapterConfigReference) one of the configured caConnections: %s. Case matters. "+
		"A SCEP profile carries its subject itself and needs no profile here.",
		list(profiles), list(caConnections))
}
