{{/* The release's full name, at most 63 characters (a DNS label). */}}
{{- define "certprov.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels that select this release's pods; never change them on upgrade. */}}
{{- define "certprov.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "certprov.labels" -}}
{{ include "certprov.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "certprov.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "certprov.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "certprov.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if eq $tag "latest" -}}
{{- fail "image.tag: pin a version; \"latest\" would let replicas run different code" -}}
{{- end -}}
{{- if .Values.image.digest -}}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* The pod template, shared by the StatefulSet (sqlite) and the Deployment (postgres). */}}
{{- define "certprov.podTemplate" -}}
metadata:
  labels:
    {{- include "certprov.selectorLabels" . | nindent 4 }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    # A changed configuration rolls the pods.
    checksum/config: {{ include (print $.Template.BasePath "/configmap.yaml") . | sha256sum }}
    {{- with .Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "certprov.serviceAccountName" . }}
  terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    runAsNonRoot: true
    runAsUser: 65532
    runAsGroup: 65532
    fsGroup: 65532
    fsGroupChangePolicy: OnRootMismatch
    seccompProfile: {type: RuntimeDefault}
  containers:
    - name: adapter
      image: {{ include "certprov.image" . }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      args: [run, --config, /etc/certprov/adapter.yaml]
      env:
        {{- if eq .Values.journal.type "postgres" }}
        # One logical instance for every replica: a process claimed by one may be finished by another.
        - name: CERTPROV_INSTANCEID
          value: {{ default (include "certprov.fullname" .) .Values.journal.postgres.instanceId | quote }}
        - name: CERTPROV_JOURNAL_TYPE
          value: postgres
        - name: CERTPROV_JOURNAL_DSN
          valueFrom:
            secretKeyRef:
              name: {{ required "journal.postgres.existingSecret: name the Secret that holds the DSN" .Values.journal.postgres.existingSecret }}
              key: {{ .Values.journal.postgres.dsnKey }}
        {{- else }}
        # The pod name: stable across restarts, distinct per replica.
        - name: CERTPROV_INSTANCEID
          valueFrom: {fieldRef: {fieldPath: metadata.name}}
        - name: CERTPROV_JOURNAL_TYPE
          value: sqlite
        {{- end }}
        - name: CERTPROV_OPS_LISTEN
          value: {{ printf ":%d" (int .Values.ops.port) | quote }}
        {{- if .Values.verifiedAccess.enabled }}
        - {name: CERTPROV_VERIFIEDACCESS_ENABLED, value: "true"}
        - {name: CERTPROV_VERIFIEDACCESS_LISTEN, value: ":8443"}
        - {name: CERTPROV_VERIFIEDACCESS_TLS_CERTFILE, value: /var/run/secrets/certprov/tls/tls.crt}
        - {name: CERTPROV_VERIFIEDACCESS_TLS_KEYFILE, value: /var/run/secrets/certprov/tls/tls.key}
        {{- end }}
        {{- with .Values.env }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      ports:
        - {name: ops, containerPort: {{ .Values.ops.port }}, protocol: TCP}
        {{- if .Values.verifiedAccess.enabled }}
        - {name: verified-access, containerPort: 8443, protocol: TCP}
        {{- end }}
      startupProbe:
        httpGet: {path: /healthz, port: ops}
        periodSeconds: 2
        failureThreshold: 30
      livenessProbe:
        httpGet: {path: /healthz, port: ops}
        periodSeconds: 10
        timeoutSeconds: 2
        failureThreshold: 3
      readinessProbe:
        httpGet: {path: /readyz, port: ops}
        periodSeconds: 5
        timeoutSeconds: 2
        failureThreshold: 2
      {{- with .Values.resources }}
      resources:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        runAsNonRoot: true
        allowPrivilegeEscalation: false
        readOnlyRootFilesystem: true
        capabilities: {drop: [ALL]}
      volumeMounts:
        - {name: config, mountPath: /etc/certprov, readOnly: true}
        {{- if eq .Values.journal.type "sqlite" }}
        - {name: data, mountPath: /var/lib/certprov}
        {{- end }}
        - {name: tmp, mountPath: /tmp}
        {{- range .Values.secretMounts }}
        - {name: {{ .name }}, mountPath: {{ .mountPath }}, readOnly: true}
        {{- end }}
        {{- if .Values.verifiedAccess.enabled }}
        - {name: verified-access-tls, mountPath: /var/run/secrets/certprov/tls, readOnly: true}
        {{- end }}
  volumes:
    - name: config
      configMap: {name: {{ include "certprov.fullname" . }}-config}
    - name: tmp
      emptyDir: {sizeLimit: 64Mi}
    {{- range .Values.secretMounts }}
    - name: {{ .name }}
      secret: {secretName: {{ .secretName }}, defaultMode: 0400}
    {{- end }}
    {{- if .Values.verifiedAccess.enabled }}
    - name: verified-access-tls
      secret: {secretName: {{ required "verifiedAccess.tlsSecret: name the kubernetes.io/tls Secret" .Values.verifiedAccess.tlsSecret }}, defaultMode: 0400}
    {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}
