// Prints the node id of the KRaft quorum's leader (the active controller), asked through
// the Admin API's DescribeMetadataQuorum. Run by ops/kafka_node.py with Java's
// single-file launcher: java -cp "<kafka jars>/*" QuorumLeader.java <bootstrap servers>
import java.util.Properties;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;

public class QuorumLeader {
    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        props.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "5000");
        props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "15000");
        try (Admin admin = Admin.create(props)) {
            System.out.println(admin.describeMetadataQuorum().quorumInfo().get().leaderId());
        }
    }
}
