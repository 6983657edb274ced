{{/*
Labels on every object the chart renders from a template. The selector keeps to the two
labels deploy/ also uses, so that both installs select their pods the same way.
*/}}
{{- define "daypass.selectorLabels" -}}
app.kubernetes.io/name: daypass
app.kubernetes.io/component: operator
{{- end }}

{{- define "daypass.labels" -}}
app.kubernetes.io/name: daypass
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{- define "daypass.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/*
The `bind` rules of the operator's ClusterRole: one per kind, each with the exact names from
bindableRoles. A kind with no names gets no rule at all, because a rule with an empty
resourceNames list would allow every name.
*/}}
{{- define "daypass.bindRules" -}}
{{- $names := dict "ClusterRole" (list) "Role" (list) }}
{{- range .Values.bindableRoles }}
{{- if not (hasKey $names .kind) }}
{{- fail (printf "bindableRoles: kind %q is not ClusterRole or Role" .kind) }}
{{- end }}
{{- if or (not .name) (contains "*" .name) }}
{{- fail (printf "bindableRoles: %q is not a role name; list each role by its exact name" .name) }}
{{- end }}
{{- $_ := set $names .kind (append (get $names .kind) .name | uniq) }}
{{- end }}
{{- range $kind, $resource := dict "ClusterRole" "clusterroles" "Role" "roles" }}
{{- with get $names $kind }}
- apiGroups: [rbac.authorization.k8s.io]
  resources: [{{ $resource }}]
  verbs: [bind]
  resourceNames: {{ toJson . }}
{{- end }}
{{- end }}
{{- end }}
