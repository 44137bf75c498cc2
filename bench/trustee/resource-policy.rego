package policy
import rego.v1

# Allow the "resource" plugin only for `sample` evidence whose EAR status is
# "affirming" (i.e. the reference values svn/launch_digest/major_version/
# minimum_minor_version were provisioned and matched by the default CPU policy).
default allow = false

allow if {
	data.plugin == "resource"
	input.submods.cpu0["ear.status"] == "affirming"
	input.submods.cpu0["ear.veraison.annotated-evidence"].sample
}
