{{/* Chart name. */}}
{{- define "llmroute.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: the release name, plus the chart name unless the release name contains it. */}}
{{- define "llmroute.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "llmroute.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "llmroute.selectorLabels" -}}
app.kubernetes.io/name: {{ include "llmroute.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "llmroute.labels" -}}
helm.sh/chart: {{ include "llmroute.chart" . }}
{{ include "llmroute.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: llmroute
{{- end -}}

{{- define "llmroute.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "llmroute.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "llmroute.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "llmroute.sidecarImage" -}}
{{- default (printf "ghcr.io/llmroute/sidecar:%s" .Chart.AppVersion) .Values.sidecar.image -}}
{{- end -}}

{{/* Service names. */}}
{{- define "llmroute.webhookService" -}}{{ include "llmroute.fullname" . }}-webhook{{- end -}}
{{- define "llmroute.configService" -}}{{ include "llmroute.fullname" . }}-config{{- end -}}
{{- define "llmroute.metricsService" -}}{{ include "llmroute.fullname" . }}-metrics{{- end -}}

{{- define "llmroute.tlsSecret" -}}
{{- default (printf "%s-tls" (include "llmroute.fullname" .)) .Values.tls.secretName -}}
{{- end -}}

{{- define "llmroute.certificateName" -}}{{ include "llmroute.fullname" . }}-serving{{- end -}}

{{/* DNS names the serving certificate covers (every Service, short and fully qualified). */}}
{{- define "llmroute.dnsNames" -}}
{{- $ns := .Release.Namespace -}}
{{- $names := list -}}
{{- range $svc := list (include "llmroute.webhookService" .) (include "llmroute.configService" .) (include "llmroute.metricsService" .) -}}
{{- $names = append $names $svc -}}
{{- $names = append $names (printf "%s.%s" $svc $ns) -}}
{{- $names = append $names (printf "%s.%s.svc" $svc $ns) -}}
{{- $names = append $names (printf "%s.%s.svc.cluster.local" $svc $ns) -}}
{{- end -}}
{{- toJson $names -}}
{{- end -}}

{{/*
Self-signed TLS material, computed once per render and cached in .Values so the Secret and the
webhook caBundle agree. An existing Secret (upgrade) is reused so the CA does not change.
*/}}
{{- define "llmroute.selfSignedTls" -}}
{{- if not (hasKey .Values "__llmrouteTls") -}}
{{- $secret := lookup "v1" "Secret" .Release.Namespace (include "llmroute.tlsSecret" .) -}}
{{- $tls := dict -}}
{{- if and $secret (index ($secret.data | default dict) "ca.crt") (index ($secret.data | default dict) "tls.crt") -}}
{{- $_ := set $tls "ca" (index $secret.data "ca.crt") -}}
{{- $_ := set $tls "cert" (index $secret.data "tls.crt") -}}
{{- $_ := set $tls "key" (index $secret.data "tls.key") -}}
{{- else -}}
{{- $days := int .Values.tls.validityDays -}}
{{- $ca := genCA (printf "%s-ca" (include "llmroute.fullname" .)) $days -}}
{{- $dns := include "llmroute.dnsNames" . | fromJsonArray -}}
{{- $cert := genSignedCert (printf "%s.%s.svc" (include "llmroute.webhookService" .) .Release.Namespace) nil $dns $days $ca -}}
{{- $_ := set $tls "ca" ($ca.Cert | b64enc) -}}
{{- $_ := set $tls "cert" ($cert.Cert | b64enc) -}}
{{- $_ := set $tls "key" ($cert.Key | b64enc) -}}
{{- end -}}
{{- $_ := set .Values "__llmrouteTls" $tls -}}
{{- end -}}
{{- end -}}

{{/* The webhooks' clientConfig caBundle (self-signed mode) or nothing (cert-manager injects it). */}}
{{- define "llmroute.caBundle" -}}
{{- if not .Values.certManager.enabled -}}
{{- include "llmroute.selfSignedTls" . -}}
caBundle: {{ index .Values "__llmrouteTls" "ca" }}
{{- end -}}
{{- end -}}

{{- define "llmroute.webhookAnnotations" -}}
{{- if .Values.certManager.enabled -}}
annotations:
  cert-manager.io/inject-ca-from: {{ printf "%s/%s" .Release.Namespace (include "llmroute.certificateName" .) }}
{{- end -}}
{{- end -}}

{{/* namespaceSelector expressions of the injection webhook: exclusions and watchNamespaces. */}}
{{- define "llmroute.namespaceExpressions" -}}
- key: kubernetes.io/metadata.name
  operator: NotIn
  values: {{ toJson (uniq (concat (list .Release.Namespace "kube-system") .Values.webhooks.injection.excludeNamespaces)) }}
{{- if .Values.watchNamespaces }}
- key: kubernetes.io/metadata.name
  operator: In
  values: {{ toJson .Values.watchNamespaces }}
{{- end }}
{{- end -}}

{{/* namespaceSelector of the validation webhook: watchNamespaces only. */}}
{{- define "llmroute.validationNamespaceSelector" -}}
{{- if .Values.watchNamespaces -}}
namespaceSelector:
  matchExpressions:
  - key: kubernetes.io/metadata.name
    operator: In
    values: {{ toJson .Values.watchNamespaces }}
{{- else -}}
namespaceSelector: {}
{{- end -}}
{{- end -}}
